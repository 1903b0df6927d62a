"""The one-box's report: both servers' disks side by side, the steps' times, the faults."""

from __future__ import annotations

import re

from lxml import etree
from rich.console import Console
from rich.table import Table

from nova_disk_tuning_bench.onebox.guests import Boot
from nova_disk_tuning_bench.onebox.lifecycle import Outcome
from nova_disk_tuning_bench.onebox.resize import ResizeTimes

DRIVER_ATTRS = ("type", "cache", "io", "discard", "iothread", "queues")


def reasons(outcome: Outcome, target: str) -> str:
    """What the drop-in's nova-compute logged as the reasons for ``target``'s settings."""
    log = outcome.compute.instances.parent / "logs" / f"{outcome.compute.service}.log"
    found = ""
    for line in log.read_text(errors="replace").splitlines():
        match = re.search(rf"Disk {target}: (.*?)(?: \[instance: |$)", line)
        if match and outcome.server_id in line:
            found = match.group(1)  # the last boot's
    return found


def _disk_cell(boot: Boot, target: str) -> str:
    view = next((d for d in boot.disks if d.target == target), None)
    if view is None:
        return "-"
    xml = " ".join(f"{k}={view.driver[k]}" for k in DRIVER_ATTRS if k in view.driver)
    qemu = f"aio={view.aio} direct={view.cache_direct} iothread={view.iothread}"
    return f"{xml}\nQEMU: {qemu}"


def disk_xml(boot: Boot, target: str) -> str:
    """The ``<disk>`` element of ``target`` in the domain XML of ``boot``."""
    for disk in etree.fromstring(boot.xml.encode()).iterfind("devices/disk"):
        found = disk.find("target")
        if found is not None and found.get("dev") == target:
            return etree.tostring(disk, pretty_print=True).decode().strip()
    return "-"


def all_held(outcomes: list[Outcome], unexpected: list[str]) -> bool:
    return not unexpected and all(
        not o.problems and not o.leftovers and o.snapshot_pattern_ok for o in outcomes
    )


def print_report(outcomes: list[Outcome], unexpected: list[str]) -> None:
    console = Console()
    outcomes = [o for o in outcomes if o.boots]
    first = {o.compute.name: o.boots[0] for o in outcomes}
    disks = Table(title="Disks at first boot (XML <driver>, QEMU's -blockdev/-device)")
    disks.add_column("disk")
    for outcome in outcomes:
        disks.add_column(outcome.compute.driver)
    dropin = next((o for o in outcomes if o.compute.name == "dropin"), None)
    for target in ("vda", "vdb"):
        disks.add_row(target, *(_disk_cell(first[o.compute.name], target) for o in outcomes))
    console.print(disks)
    xml = Table(title="The root disk's XML, as libvirt has it", show_lines=True)
    for outcome in outcomes:
        xml.add_column(outcome.compute.driver, overflow="fold")
    xml.add_row(*(disk_xml(first[o.compute.name], "vda") for o in outcomes))
    console.print(xml, markup=False)
    if dropin is not None:
        for target in ("vda", "vdb"):
            console.print(f"Why, for {target} (the drop-in's nova-compute log):", style="bold")
            for setting in reasons(dropin, target).split("; "):
                console.print(f"  {setting}", markup=False, highlight=False)
    steps = Table(title="Life cycle (seconds until the API shows the state)")
    steps.add_column("step")
    for outcome in outcomes:
        steps.add_column(outcome.compute.driver, justify="right")
    names = list(dict.fromkeys(n for o in outcomes for n in o.seconds))
    for name in names:
        steps.add_row(name, *(f"{o.seconds.get(name, float('nan')):.1f}" for o in outcomes))
    console.print(steps)
    for outcome in outcomes:
        iothreads = [(b.step, b.iothreads) for b in outcome.boots]
        console.print(f"{outcome.compute.driver}: IOThreads per boot {iothreads}")
        console.print(f"  live snapshot holds the guest's data: {outcome.snapshot_pattern_ok}")
        for problem in outcome.problems:
            console.print(f"  PROBLEM {problem}")
        for left in outcome.leftovers:
            console.print(f"  LEFT after delete: {left}")
    for line in unexpected:
        console.print(f"LOG {line}", markup=False)


def print_resize(times: dict[str, ResizeTimes], problems: list[str]) -> None:
    """Median, min-max and the ratio to Nova's driver without preallocation."""
    console = Console()
    base = times["nova"].median
    table = Table(title="Same-host resize, API call to VERIFY_RESIZE (seconds)")
    for column in ("compute", "median", "min-max", "x Nova", "n"):
        table.add_column(column, justify="left" if column == "compute" else "right")
    for name, found in times.items():
        table.add_row(
            f"{name} ({found.driver})",
            f"{found.median:.2f}",
            f"{min(found.seconds):.2f}-{max(found.seconds):.2f}",
            f"{found.median / base:.2f}",
            str(len(found.seconds)),
        )
    console.print(table)
    for problem in problems:
        console.print(f"PROBLEM {problem}", markup=False)
