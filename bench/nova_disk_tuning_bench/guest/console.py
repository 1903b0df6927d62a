"""The guest contract: its kernel command line in, its serial console lines out.

Boot the kit (:mod:`~nova_disk_tuning_bench.guest.kit`) with direct kernel
boot: ``<kernel>`` = ``kit.kernel``, ``<initrd>`` = ``kit.initrd``,
``<cmdline>`` = :func:`guest_cmdline`, a serial port on ``ttyS0`` that writes
to a file, ``<on_reboot>destroy</on_reboot>``, and virtio-blk (``vdX``)
and/or virtio-scsi (``sdX``) disks.

Kernel command line parameters:

``ndt.disks=vda,vdb``
    For each disk: wait until ``/sys/block/<disk>`` exists, print its size, write
    :func:`expected_pattern` (the ASCII text ``NDT-PATTERN-<disk>-`` repeated to
    fill 1 MiB) at offset 1 MiB with ``O_DIRECT`` and ``fsync``, drop the page cache,
    read the range back with ``O_DIRECT`` and compare. Disks need at least 2 MiB.
``ndt.sums=vda:0:1,vdb:4:2``
    Before any write, print the MD5 of ``<length MiB>`` read at ``<offset MiB>``
    (``O_DIRECT``), so a caller can check what the guest sees of a base image.
``ndt.bench=vdb``
    After the above: unpack the tar archive on disk ``vdb`` (the jobs disk, see
    :func:`~nova_disk_tuning_bench.guest.jobs.jobs_archive`), wait for the disk it
    names as the target and run each fio job file in order with terse output.
``ndt.timeout=60``
    Seconds to wait for each disk to appear (default 60).
``ndt.stay=1``
    After ``NDT-DONE``, stay up and idle instead of powering off, like a server
    whose life cycle a cloud drives (stop, reboot, resize).

With no ``ndt.*`` parameter at all (a command line that is not ours, such as
the fixed one of Nova's rescue), the guest prints ``NDT-IDLE`` on ``ttyS0``
and stays up idle, touching no disk.

Serial console lines (one per line, nothing else starts with ``NDT-``)::

    NDT-BOOT <kit key>
    NDT-MODULE <name> failed          (only on failure)
    NDT-SIZE <disk> <bytes>
    NDT-SUM <disk> <offset MiB> <length MiB> <md5 hex>
    NDT-RESULT <disk> ok
    NDT-RESULT <disk> fail <missing|too-small|write|read|compare>
    NDT-BENCH fail <why>              (the jobs disk is missing or unreadable)
    NDT-FIO-VERSION <fio --version>
    NDT-FIO-START <job>
    NDT-FIO <job> ok <fio terse v3 line>
    NDT-FIO <job> fail <fio's stderr, on one line>
    NDT-BENCH done
    NDT-DONE
    NDT-IDLE                          (booted with no ndt.* parameter)

After ``NDT-DONE`` the guest runs ``sync`` and ``poweroff -f``: the domain shuts off
by itself (unless ``ndt.stay=1``). If ``/init`` ever dies the kernel panics and,
with ``panic=-1`` on the command line, reboots, which ``on_reboot=destroy`` ends.
:func:`parse_console` turns the log into a :class:`GuestReport`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

PATTERN_OFFSET = 1024 * 1024
PATTERN_LENGTH = 1024 * 1024


@dataclasses.dataclass
class FioOutcome:
    """One ``NDT-FIO`` line: the terse result, or why fio failed."""

    ok: bool
    detail: str  # the terse line when ok, fio's complaint otherwise


@dataclasses.dataclass
class GuestReport:
    """What the guest printed on its serial console."""

    booted: bool = False
    done: bool = False
    idle: bool = False
    results: dict[str, str] = dataclasses.field(default_factory=dict)
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    sums: dict[tuple[str, int, int], str] = dataclasses.field(default_factory=dict)
    failed_modules: list[str] = dataclasses.field(default_factory=list)
    fio_version: str | None = None
    fio: dict[str, FioOutcome] = dataclasses.field(default_factory=dict)
    # The last job that started: where a guest that never finished was.
    fio_started: str | None = None
    bench_done: bool = False
    bench_error: str | None = None


def expected_pattern(disk: str, length: int = PATTERN_LENGTH) -> bytes:
    """The bytes the guest writes to ``disk`` (e.g. ``"vda"``) at PATTERN_OFFSET."""
    unit = f"NDT-PATTERN-{disk}-".encode("ascii")
    return (unit * (length // len(unit) + 1))[:length]


def guest_cmdline(
    disks: Iterable[str] = (),
    sums: Iterable[tuple[str, int, int]] = (),
    timeout: int = 60,
    extra: str = "",
    bench: str | None = None,
    stay: bool = False,
) -> str:
    """The kernel command line for a guest that writes to ``disks``.

    ``sums`` holds ``(disk, offset_mib, length_mib)`` ranges to checksum before writes;
    ``bench`` names the jobs disk; ``stay`` keeps the guest up after its report.
    ``panic=-1`` turns a dead init into a reboot, which ``on_reboot=destroy`` ends.
    """
    # rootfstype=ramfs: the initramfs otherwise unpacks into a tmpfs capped at half
    # the guest's RAM, and fio's libraries (about 85 MiB) overflow that in a 256 MiB
    # guest ("Initramfs unpacking failed: write error").
    parts = ["console=ttyS0", "panic=-1", "loglevel=4", "rootfstype=ramfs"]
    disks = list(disks)
    if disks:
        parts.append("ndt.disks=" + ",".join(disks))
    sum_specs = [f"{d}:{o}:{n}" for d, o, n in sums]
    if sum_specs:
        parts.append("ndt.sums=" + ",".join(sum_specs))
    if bench:
        parts.append(f"ndt.bench={bench}")
    parts.append(f"ndt.timeout={int(timeout)}")
    if stay:
        parts.append("ndt.stay=1")
    if extra:
        parts.append(extra)
    return " ".join(parts)


def parse_console(text: str) -> GuestReport:
    """Parse the serial console log of a guest booted from the kit."""
    report = GuestReport()
    for raw in text.splitlines():
        line = raw.strip()
        # Kernel messages can share a line with ours on a busy console: find the tag.
        idx = line.find("NDT-")
        if idx < 0:
            continue
        _parse_line(report, line[idx:])
    return report


def _parse_line(report: GuestReport, line: str) -> None:
    words = line.split()
    tag = words[0]
    if tag == "NDT-BOOT":
        report.booted = True
    elif tag == "NDT-DONE":
        report.done = True
    elif tag == "NDT-IDLE":
        report.idle = True
    elif tag == "NDT-RESULT" and len(words) >= 3:
        report.results[words[1]] = " ".join(words[2:])
    elif tag == "NDT-SIZE" and len(words) == 3 and words[2].isdigit():
        report.sizes[words[1]] = int(words[2])
    elif tag == "NDT-SUM" and len(words) == 5 and words[2].isdigit() and words[3].isdigit():
        report.sums[(words[1], int(words[2]), int(words[3]))] = words[4]
    elif tag == "NDT-MODULE" and len(words) >= 2:
        report.failed_modules.append(words[1])
    elif tag == "NDT-FIO-VERSION":
        report.fio_version = " ".join(words[1:])
    elif tag == "NDT-FIO-START" and len(words) == 2:
        report.fio_started = words[1]
    elif tag == "NDT-FIO" and len(words) >= 3 and words[2] in ("ok", "fail"):
        report.fio[words[1]] = FioOutcome(words[2] == "ok", " ".join(words[3:]))
    elif tag == "NDT-BENCH" and len(words) >= 2:
        if words[1] == "done":
            report.bench_done = True
        else:
            report.bench_error = " ".join(words[2:]) or words[1]


# A kernel that stops says why on one of these lines, and libvirt ends a QEMU
# log with "shutting down, reason=..."; the last line alone may be a trace.
_FATAL = re.compile(
    r"Kernel panic|not syncing|Initramfs|terminating on signal|shutting down|error|assert",
    re.ASCII | re.IGNORECASE,
)


# libvirt writes QEMU's command line into its log one argument per line, each
# ending in a backslash; its -blockdev arguments may name error policies.
def _said(line: str) -> bool:
    return bool(line) and not line.endswith("\\") and not line.startswith("-")


def last_words(text: str) -> str:
    """The last two lines of a console or QEMU log that say why it stopped, or "nothing"."""
    lines = [line.strip() for line in text.splitlines() if _said(line.strip())]
    fatal = [line for line in lines if _FATAL.search(line)] or lines[-1:]
    return " / ".join(repr(line[:200]) for line in fatal[-2:]) or "nothing"
