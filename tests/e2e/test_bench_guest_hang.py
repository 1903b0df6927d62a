"""``bench guest`` when one boot is lost: the run goes on and says what it left out.

Both ways to lose a boot are real: once the first guest has started its fio
job (its console says ``NDT-FIO-START``), its QEMU process is stopped with
SIGSTOP, so the guest never powers off (with ``--boot-timeout 45`` that boot
counts as hung 45 s beyond twice its 10 s job), or killed with SIGKILL, as
the OOM killer would (libvirt: shutoff reason ``crashed``). Either way the
run measures every other boot, writes the results with that repetition left
out, and ends in one error line, status 1. The 10 s job leaves the test that
long to signal QEMU in it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
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


LOST = {
    "hung": (signal.SIGSTOP, "did not power off within 65 s (booted, stuck in fio job {job})"),
    "killed": (
        signal.SIGKILL,
        "QEMU ended without the guest powering off (libvirt: crashed; the host's dmesg says "
        "if the OOM killer ended it), booted, in fio job {job} (console: ",
    ),
}


@pytest.mark.parametrize("how", sorted(LOST))
def test_a_lost_boot_is_left_out_and_the_run_goes_on(short_path, how):  # noqa: F811
    sig, said = LOST[how]
    work = short_path / "work" / WORKDIR
    run = subprocess.Popen(
        bench_guest(short_path, *ARGS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        name = _wait_for(lambda: _first_guest_in_fio(work), 300, "a guest in fio", run)
        pidfile = work / "libvirtd" / "run" / "qemu" / f"{name}.pid"
        qemu = _wait_for(lambda: procs.pid_from(pidfile, ("qemu-system",)), 5, "its QEMU", run)
        os.kill(qemu, sig)
        stdout, stderr = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert "1 of the 4 guest boot(s) run were lost" in errors[0], errors[0]

    # What was measured is written: the hung cell with its other repetition.
    data = json.loads(stdout)
    layout, variant, rep = name.removeprefix("ndt-bench-").rsplit("-", 2)
    assert (layout, rep) == ("raw-prealloc", "1")
    runs = {entry["variant"]: len(entry["iops_runs"]) for entry in data["results"]}
    expected = {"nova": 2, "pick": 2, variant: 1}
    assert runs == expected, runs
    lost = [note for note in data["notes"] if "left out, lost" in note]
    assert len(lost) == 1 and f"raw-prealloc/{variant} repetition 1" in lost[0], data["notes"]
    assert said.format(job="randread-4k-qd32") in lost[0], lost[0]
    assert (short_path / "out" / f"{name}.console.log").exists()
    assert not procs.alive(qemu) and not work.exists()
