"""What a server's guest shows: its console report, its disks' XML and QEMU arguments.

The guest (:mod:`nova_disk_tuning_bench.guest.console`) checksums 1 MiB at
``PATTERN_OFFSET`` of each disk, then writes its pattern there and reads it
back. :class:`Contents` remembers, per disk file, whose pattern was last
written to it, so the next boot's checksum says whether the operation in
between kept the data (``nothing lost``), whatever the file is attached as.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

from lxml import etree

from nova_disk_tuning_bench.guest import console, domains
from nova_disk_tuning_bench.onebox.procs import OneboxError

DISKS = ("vda", "vdb")
MIB = 1 << 20


def guest_cmdline() -> str:
    sums = [(disk, console.PATTERN_OFFSET // MIB, console.PATTERN_LENGTH // MIB) for disk in DISKS]
    return console.guest_cmdline(disks=DISKS, sums=sums, timeout=120, stay=True)


def pattern_md5(label: str) -> str:
    return hashlib.md5(console.expected_pattern(label)).hexdigest()


@dataclasses.dataclass
class DiskView:
    """One disk of the domain: its XML ``<driver>`` and what QEMU was given."""

    target: str
    source: str
    driver: dict[str, str]
    aio: str | None
    cache_direct: bool | None
    iothread: str | None


@dataclasses.dataclass
class Boot:
    """One boot of a server's guest."""

    step: str
    report: console.GuestReport
    xml: str
    disks: list[DiskView]

    @property
    def iothreads(self) -> str | None:
        return etree.fromstring(self.xml.encode()).findtext("iothreads")


def disk_views(xml: str, argv: list[str]) -> list[DiskView]:
    views = []
    for disk in etree.fromstring(xml.encode()).iterfind("devices/disk"):
        source = disk.find("source")
        if source is None or source.get("file") is None:
            continue
        path = source.get("file", "")
        args = domains.disk_by_source(argv, path)
        driver = disk.find("driver")
        views.append(
            DiskView(
                target=disk.find("target").get("dev", ""),  # type: ignore[union-attr]
                source=path,
                driver={str(k): str(v) for k, v in driver.attrib.items()}
                if driver is not None
                else {},
                aio=args.aio,
                cache_direct=args.cache_direct,
                iothread=args.device.iothread if args.device is not None else None,
            )
        )
    return views


class ConsoleWatch:
    """The console log of one server, read from where the last boot ended."""

    def __init__(self, instances: Path, server_id: str) -> None:
        self.path = instances / server_id / "console.log"
        self.identity: tuple[int, int] | None = None
        self.offset = 0

    def mark(self) -> None:
        """Everything logged so far belongs to earlier boots."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.identity, self.offset = None, 0
            return
        self.identity, self.offset = (st.st_dev, st.st_ino), st.st_size

    def wait_report(self, timeout: float = 300.0) -> console.GuestReport:
        """The report of the next boot: wait for its NDT-DONE or NDT-IDLE (progress markers)."""
        deadline = time.monotonic() + timeout
        report = console.GuestReport()
        while time.monotonic() < deadline:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                time.sleep(0.3)
                continue
            # A new file (a resize or unshelve makes one) or a truncated one: from its start.
            if (st.st_dev, st.st_ino) != self.identity or st.st_size < self.offset:
                self.identity, self.offset = (st.st_dev, st.st_ino), 0
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                report = console.parse_console(handle.read().decode(errors="replace"))
            if report.done or report.idle:
                self.mark()
                return report
            time.sleep(0.3)
        raise OneboxError(
            f"the guest printed neither NDT-DONE nor NDT-IDLE in {timeout:.0f} s: see {self.path}"
        )


class Contents:
    """Whose pattern each disk file holds at PATTERN_OFFSET (None: not known, a new disk)."""

    def __init__(self) -> None:
        self.by_file: dict[str, str | None] = {}

    def forget(self, *names: str) -> None:
        for name in names:
            self.by_file[name] = None

    def check(self, boot: Boot) -> list[str]:
        """What the guest saw that it should not have; then record what it wrote."""
        if boot.report.idle:
            return []  # a command line not ours (rescue): the guest touched no disk
        problems = []
        for disk in DISKS:
            result = boot.report.results.get(disk)
            if result != "ok":
                problems.append(f"{boot.step}: {disk} {result or 'no result'}")
        for view in boot.disks:
            name = os.path.basename(view.source)
            label = self.by_file.get(name)
            seen = boot.report.sums.get((view.target, console.PATTERN_OFFSET // MIB, 1))
            if label is not None and seen != pattern_md5(label):
                problems.append(
                    f"{boot.step}: {view.target} ({name}) does not hold what {label} wrote last"
                )
        for view in boot.disks:
            if view.target in DISKS:
                self.by_file[os.path.basename(view.source)] = view.target
        return problems
