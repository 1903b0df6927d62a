"""One guest boot of the in-guest bench: a data disk, one variant, every fio job in turn.

The domain is built from the plugin's own config objects (``domxml``) and
started on the private libvirtd (:mod:`~nova_disk_tuning_bench.guest.lifecycle`):
``type='kvm'`` or ``'qemu'`` as :mod:`~nova_disk_tuning_bench.guest.cpu` chose,
pinned, direct kernel boot of the kit, the data disk as ``vda`` with the
variant's ``<driver>``, the jobs disk as ``vdb`` (read-only), the serial
console written to a file. One boot runs all jobs in sequence: a boot costs
5-15 s under TCG, more than a short job. What QEMU really got for the data
disk (aio, cache.direct, IOThread) is read from its command line and kept
with the results.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from nova_disk_tuning import domxml
from nova_disk_tuning.agent.assembly import GuestDisk, refuse_native_without_direct_cache
from nova_disk_tuning.policy.iothreads import spread_queues
from nova_disk_tuning_bench.guest import console, cpu, domains, lifecycle
from nova_disk_tuning_bench.guest.errors import GuestLost, GuestRunError, GuestStuck
from nova_disk_tuning_bench.guest.jobs import FioResult, Job, Timing, parse_terse
from nova_disk_tuning_bench.guest.kit import GuestKit
from nova_disk_tuning_bench.guest.matrix import Variant

DATA_DISK = "vda"
JOBS_DISK = "vdb"
# Booting the kit took 5-15 s under TCG here; the rest is slack for a loaded host.
BOOT_ALLOWANCE = 180.0
# How long libvirt is given to notice a QEMU that ended while its guest was paused
# (its monitor's EOF is handled by a worker thread, after our call failed).
RESUME_SETTLE = 5.0


@dataclasses.dataclass
class BootResult:
    results: dict[str, FioResult]
    driver: str  # the data disk's <driver> element as given to libvirt
    qemu: dict[str, Any]  # what QEMU got: aio, cache.direct, iothread
    seconds: float
    fio_version: str | None


def driver_element(disk: domxml.LibvirtConfigGuestDisk) -> str:
    """The ``<driver>`` element of a disk config, as libvirt receives it."""
    driver = disk.format_dom().find("driver")
    return "" if driver is None else etree.tostring(driver, encoding="unicode").strip()


def configure_disk(disk: domxml.LibvirtConfigGuestDisk, variant: Variant) -> None:
    """Set the variant's ``<driver>`` attributes on the data disk's config."""
    if variant.tuning is not None:
        variant.tuning.apply(disk)
        return
    cell = variant.cell
    disk.driver_cache = cell.cache
    disk.driver_io = cell.io
    disk.driver_queues = variant.queues
    if cell.spread:
        # The same spread the policy plans for the first disk of a guest.
        disk.driver_iothread_queues = spread_queues(
            0, variant.queues or 1, variant.domain_iothreads
        )
    else:
        disk.driver_iothread = 1 if cell.iothread else None


def kit_guest(
    name: str, kit: GuestKit, virt_type: str, vcpus: int, memory_mb: int, cmdline: str,
    console_log: str,
) -> domxml.LibvirtConfigGuest:  # fmt: skip
    """A guest booting the kit directly, its serial console written to a file."""
    guest = domxml.LibvirtConfigGuest(
        virt_type=virt_type,
        name=name,
        uuid=str(uuid.uuid4()),
        memory=memory_mb * 1024,
        vcpus=vcpus,
        os_type="hvm",
        os_kernel=str(kit.kernel),
        os_initrd=str(kit.initrd),
        os_cmdline=cmdline,
        features=["acpi"],
        on_poweroff="destroy",
        on_reboot="destroy",
        on_crash="destroy",
    )
    guest.add_device(
        domxml.LibvirtConfigGuestSerial(type="file", source_path=console_log, target_port=0)
    )
    guest.add_device(domxml.LibvirtConfigMemoryBalloon(model="none"))
    return guest


def domain_config(
    name: str,
    kit: GuestKit,
    variant: Variant,
    data: GuestDisk,
    jobs_disk: str,
    console_log: str,
    vcpus: int,
    memory_mb: int,
    virt_type: str = "qemu",
    host_cpus: list[int] | None = None,
) -> domxml.LibvirtConfigGuest:
    """The bench guest of one variant; pinned (:func:`cpu.pin_plan`) when ``host_cpus`` is given."""
    cmdline = console.guest_cmdline(bench=JOBS_DISK)
    guest = kit_guest(name, kit, virt_type, vcpus, memory_mb, cmdline, console_log)
    if variant.domain_iothreads:
        guest.iothreads = variant.domain_iothreads
    configure_disk(data.config, variant)
    guest.add_device(data.config)
    guest.add_device(
        domxml.LibvirtConfigGuestDisk(
            source_type="file",
            source_path=jobs_disk,
            driver_name="qemu",
            driver_format="raw",
            target_dev=JOBS_DISK,
            target_bus="virtio",
            readonly=True,
        )
    )
    if host_cpus:
        pins = cpu.pin_plan(host_cpus, vcpus, variant.domain_iothreads or 0)
        guest.vcpu_pins, guest.iothread_pins = pins.vcpus, pins.iothreads
        guest.emulator_pin = pins.emulator
    guest.validate()
    refuse_native_without_direct_cache(guest.devices, name)
    return guest


def probe_kvm(
    conn: Any, kit: GuestKit, name: str, console_log: Path, qemu_log: Path,
    timeout: float = cpu.PROBE_TIMEOUT,
) -> float:  # fmt: skip
    """Boot the kit under KVM until its init speaks: the seconds it took, or GuestRunError."""
    import libvirt

    cmdline = console.guest_cmdline()  # no disks: init reports, then powers off
    memory = cpu.PROBE_MEMORY_MB
    guest = kit_guest(name, kit, "kvm", 1, memory, cmdline, str(console_log))
    started = time.monotonic()
    try:
        dom = conn.createXML(guest.to_xml(), 0)
    except libvirt.libvirtError as exc:
        said = (str(exc).splitlines() or ["no reason given"])[0]
        raise GuestRunError(f"libvirt refused a KVM guest: {said}") from None
    try:
        while time.monotonic() - started < timeout:
            if _report(console_log).booted:
                return time.monotonic() - started
            if not _active(dom):
                said = last_words(console_log, qemu_log)
                raise GuestRunError(f"a probe guest stopped under KVM before its init ({said})")
            time.sleep(0.2)
        said = last_words(console_log, qemu_log)
        raise GuestRunError(
            f"a probe guest did not reach its init within {timeout:.0f} s under KVM "
            f"(a guest kernel that hangs: nested virtualisation?; {said})"
        )
    finally:
        lifecycle.discard(dom)


def choose_accel(
    virt_type: str, conn: Any, kit: GuestKit, work: Path, qemu_log: Callable[[str], Path]
) -> cpu.Accel:
    """KVM or TCG for every guest of a run (``--virt-type``), probed on ``conn``.

    ``qemu_log`` names a domain's QEMU log (``PrivateLibvirtd.qemu_log``).
    """
    name = "ndt-bench-probe-kvm"

    def probe() -> float:
        return probe_kvm(conn, kit, name, work / f"{name}.console.log", qemu_log(name))

    return cpu.choose(virt_type, probe)


def _active(dom: Any) -> bool:
    import libvirt

    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False  # a transient domain is gone once it stopped


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def domain_name(*parts: str) -> str:
    return "ndt-bench-" + re.sub(r"[^A-Za-z0-9_-]+", "_", "-".join(parts))


def timeout_for(jobs: tuple[Job, ...], timing: Timing, allowance: float = BOOT_ALLOWANCE) -> float:
    """How long a boot may take before it counts as hung: ``allowance`` past twice its jobs."""
    return allowance + 2.0 * len(jobs) * (timing.runtime + timing.ramp)


def boot(
    conn: Any,
    qemu_log: Path,
    name: str,
    guest: domxml.LibvirtConfigGuest,
    data: GuestDisk,
    jobs: tuple[Job, ...],
    timing: Timing,
    console_log: Path,
    allowance: float = BOOT_ALLOWANCE,
) -> BootResult:
    """Run the guest to power-off; its fio results, or GuestRunError (one line).

    A guest still running ``allowance`` seconds past twice its jobs' run time raises
    GuestStuck; a QEMU that ended without the guest powering off raises GuestLost.
    """
    import libvirt

    started = time.monotonic()
    timeout = timeout_for(jobs, timing, allowance)
    driver = driver_element(data.config)
    try:
        # Paused first: QEMU's argv is read before the guest can finish and exit.
        dom = lifecycle.start_paused(conn, guest.to_xml())
    except libvirt.libvirtError as exc:
        raise GuestRunError(f"{name}: libvirt refused to start it: {exc}") from None
    try:
        try:
            argv = domains.qemu_cmdline(dom)
            dom.resume()
        except (GuestRunError, libvirt.libvirtError) as exc:
            said = str(exc).removeprefix("guest run: ")
            # QEMU ended before the guest ran? libvirt may not have seen it end yet.
            why = lifecycle.lost_reason(dom, settle=RESUME_SETTLE)
            if why:
                raise lifecycle.lost(why, f"{why}: {said}") from None
            raise GuestRunError(f"{name}: cannot read QEMU's command line or resume: {said}")
        lifecycle.wait_for_shutoff(dom, timeout, console_log=console_log, qemu_log=qemu_log)
    except GuestLost as exc:
        report = _report(console_log)
        booted = "booted" if report.booted else "never booted"
        where = f"in fio job {report.fio_started}" if report.fio_started else "before any job"
        if isinstance(exc, GuestStuck):
            raise GuestStuck(
                f"{name} did not power off within {timeout:.0f} s ({booted}, stuck {where})"
            ) from None
        why = exc.why or str(exc).splitlines()[0]
        said = last_words(console_log, qemu_log)
        raise GuestLost(f"{name}: {why}, {booted}, {where} ({said})") from None
    except GuestRunError as exc:
        # Neither a hang nor a QEMU that ended (QEMU not found): the run stops on it.
        first = str(exc).removeprefix("guest run: ").splitlines()[0]
        raise GuestRunError(f"{first} ({last_words(console_log, qemu_log)})") from None
    finally:
        lifecycle.discard(dom)
    report = _report(console_log)
    try:
        results = check_report(name, report, jobs)
    except GuestRunError as exc:
        raise GuestRunError(f"{exc} ({last_words(console_log, qemu_log)})") from None
    qemu = _qemu_view(argv, data)
    return BootResult(results, driver, qemu, time.monotonic() - started, report.fio_version)


def _report(console_log: Path) -> console.GuestReport:
    return console.parse_console(_read(console_log))


def check_report(
    name: str, report: console.GuestReport, jobs: tuple[Job, ...]
) -> dict[str, FioResult]:
    """Every job's result from the guest's report, or GuestRunError saying what went wrong."""
    if not report.booted:
        raise GuestRunError(f"{name} never reached its init (no NDT-BOOT on the console)")
    if report.bench_error:
        raise GuestRunError(f"{name}: the guest could not run the jobs: {report.bench_error}")
    results = {}
    for job in jobs:
        outcome = report.fio.get(job.name)
        if outcome is None:
            raise GuestRunError(f"{name}: fio job {job.name} printed no result in the guest")
        if not outcome.ok:
            raise GuestRunError(f"{name}: fio job {job.name} failed in the guest: {outcome.detail}")
        try:
            results[job.name] = parse_terse(outcome.detail, job.direction)
        except ValueError as exc:
            raise GuestRunError(f"{name}: fio job {job.name}: {exc}") from None
    return results


def last_words(console_log: Path, qemu_log: Path) -> str:
    """What the guest and QEMU said last, on one line: why a guest stopped early."""
    said = (("console", console_log), ("QEMU", qemu_log))
    return "; ".join(f"{who}: {console.last_words(_read(path))}" for who, path in said)


def _qemu_view(argv: list[str], data: GuestDisk) -> dict[str, Any]:
    path = data.config.source_path
    if not path:
        return {}
    try:
        args = domains.disk_by_source(argv, path)
    except GuestRunError:
        return {}
    view = {"aio": args.aio, "cache.direct": args.cache_direct, "iothread": args.iothread}
    mapping = args.device.raw.get("iothread-vq-mapping") if args.device else None
    if mapping:
        view["iothread-vq-mapping"] = mapping
    return view
