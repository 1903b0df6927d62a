"""The CLI at its edges: a reader that leaves, a late SIGTERM, names that are not UTF-8.

Every case runs the installed program's code in a new process, as an
operator's shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.conftest import MiB, requires_root

PROGRAM = [sys.executable, "-m", "nova_disk_tuning.cmd.main"]
LATIN1 = os.fsdecode(b"caf\xe9")  # a name that is not UTF-8, as the shell hands it over


@pytest.fixture
def config(test_driver_conf) -> Path:
    return test_driver_conf


@pytest.fixture
def image(tmp_path) -> str:
    path = tmp_path / "small.raw"
    path.write_bytes(os.urandom(2 * MiB))
    return str(path)


def cli(config: Path, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PROGRAM, "--config-file", str(config), *argv], capture_output=True, timeout=120, **kwargs
    )


def test_a_reader_that_leaves_gets_one_line_and_the_work_stays(config, image):
    # `spawn ... | head -c 1`: the pipe's reader is gone before the output is.
    read, write = os.pipe()
    proc = subprocess.Popen(
        [*PROGRAM, "--config-file", str(config), "spawn", "vm", "--image", image],
        stdout=write,
        stderr=subprocess.PIPE,
    )
    os.close(write)
    os.read(read, 1)
    os.close(read)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    lines = [line for line in err.decode().splitlines() if "%" not in line]
    assert lines == [
        "nova-disk-tuning spawn: stopped writing: the reader of its output closed it "
        "(what the command did stays done)"
    ]
    listed = json.loads(cli(config, "list", "--json").stdout)
    assert [(row["name"], row["state"]) for row in listed] == [("vm", "shutoff")]


def test_a_sigterm_after_the_command_ended_does_not_change_its_status(tmp_path):
    # Delivered while the interpreter shuts down, after the status was decided.
    code = """
import os, signal, atexit
from nova_disk_tuning.cmd import main as program
def finished():
    signal.signal(signal.SIGTERM, program._terminate)
    print("done", flush=True)
    return 0
program.main = finished
atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
program.cli()
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (0, "done\n", "")


def test_names_that_are_not_utf8_work_end_to_end(config, tmp_path, image):
    source = str(tmp_path / f"{LATIN1}.qcow2")
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", image, source], check=True)
    target = str(tmp_path / f"{LATIN1}-out.raw")

    converted = cli(config, "convert", source, target, "-O", "raw")
    assert converted.returncode == 0, converted.stderr
    assert os.fsencode(target) in converted.stdout  # the name's own bytes, as ls shows them
    assert subprocess.run(["qemu-img", "compare", "-q", image, target]).returncode == 0

    spawned = cli(config, "spawn", "vm", "--image", source, "--json")
    assert spawned.returncode == 0, spawned.stderr
    assert json.loads(spawned.stdout)["image"]["source"] == source


def test_a_name_too_long_for_the_file_system_is_refused_before_any_work(config, tmp_path, image):
    target = str(tmp_path / ("x" * 300 + ".raw"))
    run = cli(config, "convert", image, target, "-O", "raw", text=True)
    assert run.returncode == 1
    (line,) = [line for line in run.stderr.splitlines() if "%" not in line]
    assert "more than the 255 its file system allows" in line and target in line, line
    assert sorted(os.listdir(tmp_path)) == ["nova.conf", "small.raw"]


@requires_root
def test_preallocate_on_a_full_file_system_names_the_place(config, make_filesystem):
    mount = make_filesystem("tmpfs", size=MiB)
    with open(os.path.join(mount.path, "fill"), "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    run = cli(config, "preallocate", os.path.join(mount.path, "p.raw"), "--size", "4K", text=True)
    assert run.returncode == 1
    (line,) = run.stderr.splitlines()
    assert mount.path in line and "ENOSPC" in line, line
    assert sorted(os.listdir(mount.path)) == ["fill"]
