"""The in-guest bench run: set up, measure every cell ``repeat`` times interleaved, clean up.

Everything a run makes lives in ``<path>/ndt-bench-guest``: the private
libvirtd's directories, the data disks, the jobs disk, the consoles, the
LVM loop device's backing file. The run removes it when it ends, also on
Ctrl-C or SIGTERM; a run killed with SIGKILL leaves it, and the next run
on the same path ends what still runs there (pid files), releases the loop
device and removes it first. A lock (flock) on ``<path>`` keeps two runs on
one path apart.

Repetitions are interleaved (repetition 1 of every cell, then 2, ...) and
the variants of a layout rotate each repetition, so a noisy neighbour or a
warming page cache hurts every cell alike. Each boot gets a fresh data
disk, made the same way. The host-side bound of each layout is fio with
the same jobs, in the same order, on a fresh disk of the layout, run on the
host once per repetition.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning.common.units import GiB
from nova_disk_tuning.host import Host
from nova_disk_tuning.policy.decide import tune_guest
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps
from nova_disk_tuning.policy.iothreads import EXTRA_SPEC
from nova_disk_tuning_bench.guest import boot as guest_boot
from nova_disk_tuning_bench.guest import cpu, datadisk, kit, matrix
from nova_disk_tuning_bench.guest import rig as guest_rig
from nova_disk_tuning_bench.guest.daemon import PrivateLibvirtd
from nova_disk_tuning_bench.guest.errors import GuestBenchError, GuestLost
from nova_disk_tuning_bench.guest.jobs import JOBS, FioResult, Job, Timing, jobs_archive
from nova_disk_tuning_bench.guest.jobs import run_on_host as fio_on_host

LOG = logging.getLogger(__name__)

WORKDIR = guest_rig.WORKDIR
# Boot, power-off and making the disk, per boot, measured here with --quick.
BOOT_OVERHEAD = 20.0
# A cell that lost this many boots is not booted again in the run: one hang or
# one QEMU that ended under its guest is a glitch of that boot (GuestLost), a
# second says the XML is at fault.
MAX_LOST = 2

Progress = Callable[[float], None]


@dataclasses.dataclass(frozen=True)
class Settings:
    layouts: tuple[str, ...]
    variants: tuple[str, ...]  # names or fnmatch patterns
    jobs: tuple[Job, ...]
    timing: Timing
    repeat: int
    disk_size: int
    quick: bool
    vcpus: int = 2
    memory_mb: int = 512
    iothreads: int | None = None  # as hw:disk_iothreads; None: [disk_tuning] iothreads
    host_bound: bool = True
    virt_type: str = "auto"  # cpu.VIRT_TYPES
    pin: bool = True
    boot_timeout: float = guest_boot.BOOT_ALLOWANCE  # past twice the jobs: a hung boot


QUICK = Settings(
    layouts=matrix.QUICK_LAYOUTS,
    variants=matrix.QUICK_VARIANTS,
    jobs=JOBS,
    timing=Timing(runtime=3, ramp=1),
    repeat=2,
    disk_size=1 * GiB,
    quick=True,
)
FULL = Settings(
    layouts=matrix.LAYOUT_NAMES,
    variants=("*",),
    jobs=JOBS,
    timing=Timing(runtime=20, ramp=2),
    repeat=2,
    disk_size=4 * GiB,
    quick=False,
)


@dataclasses.dataclass
class Cell:
    """One (layout, variant): its XML and every repetition of every job."""

    layout: str
    variant: matrix.Variant
    driver: str = ""
    qemu: dict[str, Any] = dataclasses.field(default_factory=dict)
    runs: dict[str, list[FioResult]] = dataclasses.field(default_factory=dict)
    lost: int = 0  # boots lost (hung, or QEMU ended), left out of ``runs``

    @property
    def dropped(self) -> bool:
        """Not booted again in this run: it lost MAX_LOST boots."""
        return self.lost >= MAX_LOST


@dataclasses.dataclass
class GuestBench:
    settings: Settings
    caps: HostCaps | None = None
    accel: cpu.Accel | None = None
    kit_key: str = ""
    fio_version: str = ""
    facts: dict[str, DiskFacts] = dataclasses.field(default_factory=dict)
    cells: list[Cell] = dataclasses.field(default_factory=list)
    host: dict[tuple[str, str], list[FioResult]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)  # boots left out, one line each
    boots: int = 0
    elapsed: float = 0.0
    estimate: float = 0.0
    announce: Callable[[str], None] = dataclasses.field(default=lambda line: None, repr=False)


def estimate_seconds(settings: Settings, boots: int, layouts: int) -> float:
    """How long the measuring takes: boots plus host-side runs, every repetition."""
    jobs = len(settings.jobs) * (settings.timing.runtime + settings.timing.ramp)
    host = layouts * jobs if settings.host_bound else 0
    return settings.repeat * (boots * (BOOT_OVERHEAD + jobs) + host)


@contextlib.contextmanager
def _overrides(conf: cfg.ConfigOpts, uri: str) -> Iterator[None]:
    conf.set_override("connection_uri", uri, "libvirt")
    conf.set_override("virt_type", "qemu", "libvirt")
    try:
        yield
    finally:
        conf.clear_override("connection_uri", "libvirt")
        conf.clear_override("virt_type", "libvirt")


def run(
    conf: cfg.ConfigOpts,
    path: str | None,
    settings: Settings,
    progress: Progress | None = None,
    failure_dir: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> GuestBench:
    """Measure ``settings``' matrix in guests on a private libvirtd under ``path``.

    ``announce`` gets one line once the matrix is known: its size and how long
    measuring it will take.
    """
    started = time.monotonic()
    report = progress or (lambda percent: None)
    bench = GuestBench(settings, announce=announce or (lambda line: None))
    failures = Path(failure_dir) if failure_dir else None
    base = Path(os.path.abspath(path or conf.instances_path))
    with guest_rig.workdir(base) as work:
        guest_kit = kit.build_guest_kit()
        bench.kit_key, bench.fio_version = guest_kit.key, guest_kit.fio_version
        report(1.0)
        disks = datadisk.DataDisks(conf, work, settings.disk_size)
        with (
            guest_rig.daemon(work, failures) as daemon,
            _overrides(conf, daemon.uri),
            contextlib.closing(daemon.open()) as conn,
        ):
            try:
                bench.accel = guest_boot.choose_accel(
                    settings.virt_type, conn, guest_kit, work, daemon.qemu_log
                )
                # Host caps and the policy then see the domain type the guests get.
                conf.set_override("virt_type", bench.accel.virt_type, "libvirt")
                bench.announce(f"bench guest: {bench.accel.line()}")
                _measure(conf, bench, conn, guest_kit, daemon, disks, work, failures, report)
            finally:
                disks.close()
    bench.elapsed = time.monotonic() - started
    return bench


def _layouts(bench: GuestBench) -> list[matrix.GuestLayout]:
    chosen = []
    for name in bench.settings.layouts:
        layout = next(lay for lay in matrix.LAYOUTS if lay.name == name)
        missing = datadisk.lvm_missing() if layout.images_type == "lvm" else None
        if missing:
            bench.notes.append(f"{name}: not measured, {missing}")
            continue
        chosen.append(layout)
    return chosen


def _plan(
    conf: cfg.ConfigOpts, bench: GuestBench, disks: datadisk.DataDisks
) -> list[tuple[matrix.GuestLayout, list[matrix.Variant]]]:
    """Each layout's variants, decided on the facts of a disk made as the measured ones."""
    assert bench.caps is not None
    settings = bench.settings
    count = conf.disk_tuning.iothreads if settings.iothreads is None else settings.iothreads
    flavor = None if settings.iothreads is None else {EXTRA_SPEC: str(settings.iothreads)}
    plan = []
    for layout in _layouts(bench):
        disk = disks.make(layout)
        try:
            facts = disk.facts
            # Under the layout's own preallocate_images, as its host would decide.
            with disks.configured(layout):
                tuning = tune_guest([facts], bench.caps, conf, settings.vcpus, flavor)
        finally:
            disks.destroy(layout, disk)
        bench.facts[layout.name] = facts
        pick = matrix.pick_variant(tuning.disk(facts.name), tuning.iothreads.thread_count, facts)
        variants, notes = matrix.variants(
            layout, facts, pick, settings.vcpus, settings.variants, bench.caps.io_uring,
            count, matrix.spread_problem(bench.caps, count, settings.vcpus),
        )  # fmt: skip
        bench.notes.extend(notes)
        if not variants:
            bench.notes.append(f"{layout.name}: no variant matches {', '.join(settings.variants)}")
            continue
        plan.append((layout, variants))
    return plan


def _measure(
    conf: cfg.ConfigOpts,
    bench: GuestBench,
    conn: Any,
    guest_kit: kit.GuestKit,
    daemon: PrivateLibvirtd,
    disks: datadisk.DataDisks,
    work: Path,
    failures: Path | None,
    report: Progress,
) -> None:
    settings = bench.settings
    with Host(conf, read_only=True) as host:
        bench.caps = host.caps()
    plan = _plan(conf, bench, disks)
    if not plan:
        raise GuestBenchError(reason="nothing to measure: " + "; ".join(bench.notes))
    boots = sum(len(variants) for _, variants in plan)
    bench.estimate = estimate_seconds(settings, boots, len(plan))
    bench.announce(
        f"bench guest: {len(plan)} layout(s), {boots} guest boot(s) x {settings.repeat} "
        f"repetition(s), {len(settings.jobs)} jobs of {settings.timing.runtime} s each: "
        f"about {bench.estimate / 60:.0f} min"
    )
    jobs_disk = work / "jobs.tar"
    jobs_archive(str(jobs_disk), settings.jobs, settings.timing, guest_boot.DATA_DISK)
    (work / "consoles").mkdir()
    cells = {(lay.name, v.name): Cell(lay.name, v) for lay, variants in plan for v in variants}
    bench.cells = list(cells.values())
    rig = guest_rig.Rig(conn, daemon, guest_kit, disks, jobs_disk, work / "consoles", failures)
    steps = settings.repeat * (boots + len(plan))
    done = 0
    for rep in range(settings.repeat):
        for layout, variants in plan:
            shift = rep % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                cell = cells[(layout.name, variant.name)]
                if not cell.dropped:
                    _boot_once(bench, rig, layout, cell, rep)
                    bench.boots += 1
                done += 1
                report(2.0 + 97.0 * done / steps)
            if settings.host_bound:
                _host_once(bench, disks, layout)
            done += 1
            report(2.0 + 97.0 * done / steps)


def _boot_once(
    bench: GuestBench, rig: guest_rig.Rig, layout: matrix.GuestLayout, cell: Cell, rep: int
) -> None:
    settings = bench.settings
    name = guest_boot.domain_name(layout.name, cell.variant.name, str(rep + 1))
    console_log = rig.consoles / f"{name}.log"
    disk = rig.disks.make(layout)
    try:
        guest = guest_boot.domain_config(
            name,
            rig.kit,
            cell.variant,
            disk,
            str(rig.jobs_disk),
            str(console_log),
            settings.vcpus,
            settings.memory_mb,
            virt_type=bench.accel.virt_type if bench.accel else "qemu",
            host_cpus=cpu.host_cpus() if settings.pin else None,
        )
        try:
            result = guest_boot.boot(
                rig.conn,
                rig.daemon.qemu_log(name),
                name,
                guest,
                disk,
                settings.jobs,
                settings.timing,
                console_log,
                settings.boot_timeout,
            )
        except GuestBenchError as exc:
            kept = guest_rig.keep_log(rig.failures, f"{name}.console.log", console_log)
            guest_rig.keep_log(rig.failures, f"{name}.qemu.log", rig.daemon.qemu_log(name))
            if not isinstance(exc, GuestLost):
                raise GuestBenchError(
                    reason=f"{layout.name}/{cell.variant.name}: {exc}{kept}"
                ) from None
            # The run goes on without this repetition; the report says so.
            cell.lost += 1
            left = settings.repeat - rep - 1
            if cell.dropped and left:
                bench.notes.append(
                    f"{layout.name}/{cell.variant.name}: not booted again after {MAX_LOST} "
                    f"lost boots, its last {left} repetition(s) not measured"
                )
            bench.failed.append(
                f"{layout.name}/{cell.variant.name} repetition {rep + 1}: {exc}{kept}"
            )
            return
    finally:
        rig.disks.destroy(layout, disk)
    cell.driver = cell.driver or result.driver
    cell.qemu = cell.qemu or result.qemu
    if result.fio_version and result.fio_version != bench.fio_version:
        bench.fio_version = result.fio_version
    for job, fio in result.results.items():
        cell.runs.setdefault(job, []).append(fio)


def _host_once(bench: GuestBench, disks: datadisk.DataDisks, layout: matrix.GuestLayout) -> None:
    settings = bench.settings
    disk = disks.make(layout)
    try:
        path = disk.config.source_path
        assert path is not None
        if os.path.isfile(path) and os.path.getsize(path) < settings.disk_size:
            # A qcow2 file is shorter than the guest's disk: extend it (a hole) so fio
            # covers the same span; what the backend allocated stays allocated.
            os.truncate(path, settings.disk_size)
        for job in settings.jobs:
            result = fio_on_host(job, settings.timing, path, settings.disk_size)
            bench.host.setdefault((layout.name, job.name), []).append(result)
    finally:
        disks.destroy(layout, disk)
