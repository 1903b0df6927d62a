"""``bench guest`` when one guest hangs: the run goes on and says what it left out.

The hang is real: once the first guest has started its fio job (its console
says ``NDT-FIO-START``), its QEMU process is stopped with SIGSTOP, so the
guest never powers off. With ``--boot-timeout 45`` that boot counts as hung
45 s beyond twice its 10 s job; the run measures every other boot, writes
the results with that repetition left out, and ends in one error line,
status 1. The 10 s job leaves the test that long to stop QEMU in it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from nova_disk_tuning_bench.guest import procs
from nova_disk_tuning_bench.guest.run import WORKDIR

from tests.e2e.test_bench_guest import _root, _wait_for, bench_guest, short_path  # noqa: F401

ARGS = (
    "--layouts", "raw-prealloc", "--variants", "nova", "pick", "--jobs", "randread-4k-qd32",
    "--size", "256M", "--repeat", "2", "--runtime", "10", "--ramp", "0", "--no-host-bound",
    "--boot-timeout", "45", "--json", "--virt-type", "qemu",
)  # fmt: skip


def _first_guest_in_fio(work: Path) -> str | None:
    for log in sorted((work / "consoles").glob("ndt-bench-*.log")):
        if "NDT-FIO-START" in log.read_text(errors="replace"):
            return log.stem
    return None


def test_a_hung_guest_is_left_out_and_the_run_goes_on(short_path):  # noqa: F811
    work = short_path / "work" / WORKDIR
    run = subprocess.Popen(
        bench_guest(short_path, *ARGS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        name = _wait_for(lambda: _first_guest_in_fio(work), 300, "a guest in fio", run)
        pidfile = work / "libvirtd" / "run" / "qemu" / f"{name}.pid"
        qemu = _wait_for(lambda: procs.pid_from(pidfile, ("qemu-system",)), 5, "its QEMU", run)
        os.kill(qemu, signal.SIGSTOP)
        stdout, stderr = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert "1 of the 4 guest boot(s) run hung and are left out" in errors[0], errors[0]

    # What was measured is written: the hung cell with its other repetition.
    data = json.loads(stdout)
    layout, variant, rep = name.removeprefix("ndt-bench-").rsplit("-", 2)
    assert (layout, rep) == ("raw-prealloc", "1")
    runs = {entry["variant"]: len(entry["iops_runs"]) for entry in data["results"]}
    expected = {"nova": 2, "pick": 2, variant: 1}
    assert runs == expected, runs
    hung = [note for note in data["notes"] if "left out, hung" in note]
    assert len(hung) == 1 and f"raw-prealloc/{variant} repetition 1" in hung[0], data["notes"]
    assert "did not power off within 65 s (booted, stuck in fio job randread-4k-qd32)" in hung[0]
    assert (short_path / "out" / f"{name}.console.log").exists()
    assert not procs.alive(qemu) and not work.exists()
