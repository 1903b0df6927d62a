"""Inputs that are not whole image files, given to the CLI as an operator would.

Each command must end at once with one line that names the input, never
hang (a FIFO), never print a traceback, and create nothing.
"""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.images import fetch, inspection, source
from tests.functional.conftest import requires_root
from tests.functional.images.conftest import MiB, compare, run

TIMEOUT = 60


@pytest.fixture
def config(test_driver_conf) -> str:
    return str(test_driver_conf)


def cli(config: str, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", config, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)


def assert_one_line_error(proc: subprocess.CompletedProcess, path: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert path in lines[0]
    return lines[0]


def _fifo(inputs: str) -> str:
    path = os.path.join(inputs, "image.fifo")
    os.mkfifo(path)
    return path


def _directory(inputs: str) -> str:
    path = os.path.join(inputs, "image.d")
    os.mkdir(path)
    return path


def _zero_link(inputs: str) -> str:
    path = os.path.join(inputs, "zero.img")
    os.symlink("/dev/zero", path)
    return path


def _empty(inputs: str) -> str:
    path = os.path.join(inputs, "empty.img")
    open(path, "wb").close()
    return path


def _truncated_qcow2(inputs: str) -> str:
    whole = os.path.join(inputs, "whole.qcow2")
    run("qemu-img", "create", "-f", "qcow2", whole, "64M")
    with open(whole, "rb") as handle:
        data = handle.read()
    os.unlink(whole)
    (l1_offset,) = struct.unpack(">Q", data[40:48])
    path = os.path.join(inputs, "cut.qcow2")
    with open(path, "wb") as handle:
        handle.write(data[:l1_offset])
    return path


BAD_INPUTS = {
    "fifo": (_fifo, "it is a FIFO"),
    "directory": (_directory, "it is a directory"),
    "dev-zero-symlink": (_zero_link, "it is a character device (/dev/zero"),
    "empty": (_empty, "it is empty (0 bytes)"),
    "truncated-qcow2": (_truncated_qcow2, "it is truncated: its qcow2 header places the L1"),
}


@pytest.fixture(params=BAD_INPUTS, ids=str)
def bad_input(request, tmp_path) -> tuple[str, str]:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    make, reason = BAD_INPUTS[request.param]
    return make(str(inputs)), reason


def test_image_info_refuses(config, bad_input):
    path, reason = bad_input
    before = sorted(os.listdir(os.path.dirname(path)))
    line = assert_one_line_error(cli(config, "image-info", path), path)
    assert reason in line
    assert sorted(os.listdir(os.path.dirname(path))) == before


def test_convert_refuses_and_creates_nothing(tmp_path, config, bad_input):
    path, reason = bad_input
    out = tmp_path / "out"
    out.mkdir()
    line = assert_one_line_error(
        cli(config, "convert", path, str(out / "dst.raw"), "-O", "raw"), path
    )
    assert reason in line
    assert os.listdir(out) == []


def test_spawn_from_a_fifo_returns(tmp_path, config):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = _fifo(str(inputs))
    line = assert_one_line_error(cli(config, "spawn", "fifo-vm", "--image", path), path)
    assert "it is a FIFO" in line


# -- a block device is an image input -----------------------------------------------------


@requires_root
def test_a_qcow2_on_a_block_device_is_checked_and_copied_whole(
    tmp_path, config, loop_device, qcow2_image
):
    device = loop_device(size=64 * MiB)
    run("dd", f"if={qcow2_image}", f"of={device.path}", "bs=1M", "conv=fsync,notrunc")

    proc = cli(config, "image-info", device.path, "--json")
    assert proc.returncode == 0, proc.stderr
    found = inspection.ImageSafety().check(device.path, "qcow2")
    assert (found.format, found.virtual_size) == ("qcow2", 32 * MiB)

    copy = str(tmp_path / "copy.qcow2")
    # st_size of a block device is 0: the copy has the device's size.
    assert fetch.LocalFileFetcher().fetch(device.path, copy) == 64 * MiB
    assert os.path.getsize(copy) == 64 * MiB
    assert compare(qcow2_image, "qcow2", copy, "qcow2").returncode == 0


@requires_root
def test_an_empty_block_device_is_refused(config, loop_device):
    device = loop_device(size=0)  # a loop device on a 0-byte file
    line = assert_one_line_error(cli(config, "image-info", device.path), device.path)
    assert "it is an empty block device (0 bytes" in line


@requires_root
def test_a_block_device_without_its_driver_is_refused(tmp_path):
    # Major 240 is reserved for local/experimental use (Linux's devices.txt):
    # no driver, so open() fails with ENXIO.
    node = str(tmp_path / "no-driver")
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(240, 0))
    with pytest.raises(exception.ImageUnacceptable, match=r"it cannot be opened \(ENXIO"):
        source.check_source(node)


# Formats by their qemu-img names, and images that need a key ------------------


@pytest.mark.parametrize("declared", [None, "vpc", "vhd"], ids=["detected", "vpc", "glance-vhd"])
def test_a_vhd_image_converts_as_qemu_img_calls_it(config, tmp_path, raw_image, declared):
    vhd = str(tmp_path / "disk.vhd")
    run("qemu-img", "convert", "-q", "-f", "raw", "-O", "vpc", raw_image, vhd)
    assert inspection.ImageSafety().check(vhd, declared).format == "vpc"
    out = str(tmp_path / "out.raw")
    proc = cli(config, "convert", vhd, out, "-O", "raw", *(["-f", "vpc"] if declared else []))
    assert proc.returncode == 0, proc.stderr
    assert compare(vhd, "vpc", out, "raw").returncode == 0


SECRET = "secret,id=s0,data=not-a-real-key"
# A short key-derivation time keeps the test fast. qemu-img times its key
# derivation with the thread's CPU clock, which on this VM sometimes reads no
# progress ("Unable to get accurate CPU usage"): the create is tried again.
QCOW2_LUKS = "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100"


@pytest.mark.parametrize(
    ("fmt", "options", "how"),
    [
        ("qcow2", QCOW2_LUKS, "qcow2 with LUKS"),
        ("luks", "key-secret=s0,iter-time=100", "a LUKS volume"),
    ],
    ids=["qcow2-luks", "luks"],
)
def test_an_encrypted_image_is_refused_naming_it(config, tmp_path, fmt, options, how):
    path = str(tmp_path / f"secret.{fmt}")
    argv = ["qemu-img", "create", "-q", "--object", SECRET, "-f", fmt, "-o", options, path, "4M"]
    for _ in range(10):
        made = subprocess.run(argv, capture_output=True, text=True)
        if made.returncode == 0 or "accurate CPU usage" not in made.stderr:
            break
    assert made.returncode == 0, made.stderr
    out = str(tmp_path / "out.raw")
    proc = cli(config, "convert", path, out, "-O", "raw")
    line = assert_one_line_error(proc, path)
    assert f"it is encrypted ({how})" in line and "decrypted" in line, line
    assert not os.path.exists(out)
