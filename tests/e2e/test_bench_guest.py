"""``nova-disk-tuning bench guest`` end to end, as a subprocess on this host.

The smoke test runs ``--quick --json`` and checks the run completes and the
JSON has every field for every (layout, variant, job), not a speed. The
failure test boots a guest that cannot boot (64 MiB: the initramfs does not
fit) after killing a run with SIGKILL in the middle of a guest: the second
run ends what the first left running, fails in one line, and leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nova_disk_tuning_bench.guest import cpu, procs
from nova_disk_tuning_bench.guest.jobs import JOB_NAMES
from nova_disk_tuning_bench.guest.run import QUICK, WORKDIR

NOT_ROOT = "bench guest needs root: a private libvirtd runs QEMU as root"
FIELDS = {"layout": str, "variant": str, "job": str, "driver": str}
NUMBERS = ("iops", "iops_min", "iops_max")


@pytest.fixture
def short_path() -> Iterator[Path]:
    """A work path short enough for the private daemon's unix socket (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ndt-bg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def bench_guest(tmp_path: Path, *args: str) -> list[str]:
    conf = tmp_path / "nova.conf"
    conf.write_text(f"[DEFAULT]\ninstances_path = {tmp_path / 'instances'}\n")
    return [
        sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", str(conf),
        "bench", "guest", "--path", str(tmp_path / "work"), "--output", str(tmp_path / "out"),
        *args,
    ]  # fmt: skip


def kept_logs(output: Path, lines: int = 40) -> str:
    """The tails of the logs a failed run kept in its output directory."""
    parts = []
    for path in sorted(output.glob("*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"\n--- {path.name} ---\n" + "\n".join(text))
    return "".join(parts)


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)


def test_quick_json_has_every_field_for_every_cell(short_path):
    tmp_path = short_path
    started = time.monotonic()
    proc = subprocess.run(
        bench_guest(tmp_path, "--quick", "--json"), capture_output=True, text=True, timeout=900
    )
    print(f"bench guest --quick: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:] + kept_logs(tmp_path / "out")
    assert "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)

    entries = data["results"]
    cells = {(e["layout"], e["variant"], e["job"]) for e in entries}
    assert cells == {(lay, var, job) for lay in QUICK.layouts for var in QUICK.variants
                     for job in JOB_NAMES}  # fmt: skip
    assert len(entries) == len(cells)
    for entry in entries:
        for key, kind in FIELDS.items():
            assert isinstance(entry[key], kind), (key, entry)
        for key in NUMBERS:
            assert isinstance(entry[key], (int, float)) and entry[key] > 0, (key, entry)
        assert entry["iops_min"] <= entry["iops"] <= entry["iops_max"], entry
        assert entry["driver"].startswith("<driver ") and "type=" in entry["driver"], entry
    drivers = {e["variant"]: e["driver"] for e in entries}
    assert "cache=" not in drivers["defaults"]  # libvirt's defaults: type only
    # The common report came along: files, a row per variant and the host-side bound.
    out = tmp_path / "out"
    assert (out / "results.json").is_file() and (out / "report.md").is_file()
    assert {r["variant"] for e in data["experiments"] for r in e["results"]} == {
        *QUICK.variants,
        "host-bound",
    }
    assert not (tmp_path / "work" / WORKDIR).exists()
    # --virt-type auto (the default): KVM where a probe guest boots under it,
    # TCG otherwise, said once on stderr and carried by the JSON and the report.
    guest = data["guest"]
    said = [line for line in proc.stderr.splitlines() if "guests ran under" in line]
    assert len(said) == 1 and guest["accel_reason"] in said[0], proc.stderr
    assert {"kvm": "KVM", "qemu": "TCG"}[guest["virt_type"]] == guest["accel"]
    assert guest["pinned"] is True
    if cpu.kvm_problem() is not None:
        assert guest["virt_type"] == "qemu" and cpu.kvm_problem() in guest["accel_reason"]
    assert f"Guests under {guest['accel']} (" in (out / "report.md").read_text()


def _wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before {what}")
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_run_is_cleaned_up_by_the_next_and_a_dead_guest_fails_in_one_line(short_path):
    tmp_path = short_path
    work = tmp_path / "work" / WORKDIR
    first = subprocess.Popen(
        bench_guest(
            tmp_path,
            "--quick",
            "--runtime",
            "60",
            "--jobs",
            "randread-4k-qd32",
            "--virt-type",
            "qemu",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        qemu_pidfile = _wait_for(
            lambda: next(work.glob("libvirtd/run/qemu/ndt-bench-*.pid"), None),
            300,
            "a guest started",
            first,
        )
        qemu = _wait_for(lambda: procs.pid_from(qemu_pidfile, ("qemu-system",)), 30, "QEMU")
        libvirtd = procs.pid_from(work / "libvirtd" / "run" / "libvirtd.pid", ("libvirtd",))
        assert libvirtd is not None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # What the killed run left: its daemon and guest, recorded under its work directory.
    assert procs.alive(qemu) and procs.alive(libvirtd)

    # 64 MiB cannot hold the initramfs: the kernel finds no /init and panics.
    proc = subprocess.run(
        bench_guest(
            tmp_path,
            "--quick",
            "--memory",
            "64",
            "--repeat",
            "1",
            "--runtime",
            "1",
            "--virt-type",
            "qemu",
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, proc.stderr
    assert "never reached its init" in errors[0] and "Traceback" not in proc.stderr
    assert list((tmp_path / "out").glob("*.console.log"))
    assert not procs.alive(qemu) and not procs.alive(libvirtd)
    assert not work.exists()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []
