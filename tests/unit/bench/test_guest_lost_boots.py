"""bench guest: how a run counts lost boots, leaves them out, and stops on the rest.

The boots themselves are stand-ins here: a real hung guest and a real QEMU
killed under its guest are tests/e2e/test_bench_guest_hang.py (one lost boot
each, about 1.5 min per leg); losing two boots of one cell there would take
three repetitions and two signals, so the counting is checked here.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from nova_disk_tuning_bench.guest import boot as guest_boot
from nova_disk_tuning_bench.guest import matrix, run
from nova_disk_tuning_bench.guest.errors import (
    GuestBenchError,
    GuestLost,
    GuestRunError,
    GuestStuck,
)
from nova_disk_tuning_bench.guest.jobs import JOBS

LAYOUT = matrix.LAYOUTS[0]


class _Disks:
    def __init__(self) -> None:
        self.made = 0
        self.destroyed = 0

    def make(self, layout):
        self.made += 1
        return SimpleNamespace()

    def destroy(self, layout, disk) -> None:
        self.destroyed += 1


def _rig(tmp_path: Path) -> SimpleNamespace:
    consoles = tmp_path / "consoles"
    consoles.mkdir()
    return SimpleNamespace(
        conn=None, kit=None, jobs_disk=tmp_path / "jobs.tar", consoles=consoles,
        failures=tmp_path / "out", disks=_Disks(),
        daemon=SimpleNamespace(qemu_log=lambda name: tmp_path / f"{name}.qemu.log"),
    )  # fmt: skip


@pytest.fixture
def boots(monkeypatch, tmp_path):
    """Each boot raises the next of the errors given; its console says so."""
    outcomes: list[Exception] = []

    def boot(conn, qemu_log, name, guest, disk, jobs, timing, console_log, allowance):
        console_log.write_text(f"console of {name}\n")
        raise outcomes.pop(0)

    monkeypatch.setattr(guest_boot, "domain_config", lambda *args, **kwargs: None)
    monkeypatch.setattr(guest_boot, "boot", boot)
    return outcomes


def _bench(repeat: int) -> run.GuestBench:
    settings = run.Settings(
        layouts=(LAYOUT.name,), variants=("nova",), jobs=JOBS[:1],
        timing=run.QUICK.timing, repeat=repeat, disk_size=1 << 30, quick=False, pin=False,
    )  # fmt: skip
    return run.GuestBench(settings)


def _cell() -> run.Cell:
    variant = matrix.Variant(
        "nova", matrix.Cell("none", "native", False), None, 0, True, "Nova's XML"
    )
    return run.Cell(LAYOUT.name, variant)


def test_lost_boots_are_left_out_and_a_cell_that_loses_two_is_dropped(tmp_path, boots):
    bench, rig, cell = _bench(repeat=3), _rig(tmp_path), _cell()
    boots += [GuestStuck("hung"), GuestLost("QEMU ended (libvirt: crashed)")]
    for rep in (0, 1):
        run._boot_once(bench, rig, LAYOUT, cell, rep)  # type: ignore[arg-type]
    assert cell.dropped and cell.runs == {}
    assert [line.split(":")[0] for line in bench.failed] == [
        f"{LAYOUT.name}/nova repetition 1", f"{LAYOUT.name}/nova repetition 2",
    ]  # fmt: skip
    assert "crashed" in bench.failed[1] and str(tmp_path / "out") in bench.failed[1]
    assert bench.notes == [
        f"{LAYOUT.name}/nova: not booted again after 2 lost boots, "
        "its last 1 repetition(s) not measured"
    ]
    name = guest_boot.domain_name(LAYOUT.name, "nova", "2")
    assert (tmp_path / "out" / f"{name}.console.log").read_text() == f"console of {name}\n"
    assert rig.disks.made == rig.disks.destroyed == 2  # each boot's disk went with it


def test_a_cell_that_loses_its_last_repetition_leaves_nothing_unmeasured(tmp_path, boots):
    bench, rig, cell = _bench(repeat=2), _rig(tmp_path), _cell()
    boots += [GuestLost("a"), GuestLost("b")]
    for rep in (0, 1):
        run._boot_once(bench, rig, LAYOUT, cell, rep)  # type: ignore[arg-type]
    assert len(bench.failed) == 2 and bench.notes == []


def test_any_other_failed_boot_stops_the_run_in_one_line(tmp_path, boots):
    bench, rig, cell = _bench(repeat=2), _rig(tmp_path), _cell()
    boots.append(GuestRunError("fio job randread-4k-qd32 failed in the guest"))
    with pytest.raises(GuestBenchError) as info:
        run._boot_once(bench, rig, LAYOUT, cell, 0)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"bench guest: {LAYOUT.name}/nova: fio job randread-4k-qd32 failed")
    assert "\n" not in message and "(log: " in message
    assert cell.lost == 0 and bench.failed == [] and rig.disks.destroyed == 1
