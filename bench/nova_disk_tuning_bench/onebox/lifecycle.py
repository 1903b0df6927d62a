"""A server's life cycle through Nova's API, each step checked in the guest.

boot, hard reboot, stop/start, live snapshot, same-host resize (to a flavor with
another ``hw:disk_iothreads``) and confirm, shelve/unshelve, rescue/unrescue,
delete. After every step that boots the guest, its report must show both disks
written and read back, and each disk holding what was last written to it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nova_disk_tuning_bench.guest import console, domains
from nova_disk_tuning_bench.guest.daemon import PrivateLibvirtd
from nova_disk_tuning_bench.onebox.api import Glance, Nova
from nova_disk_tuning_bench.onebox.guests import (
    Boot,
    ConsoleWatch,
    Contents,
    disk_views,
)
from nova_disk_tuning_bench.onebox.nova import Compute
from nova_disk_tuning_bench.onebox.procs import OneboxError

if TYPE_CHECKING:
    from nova_disk_tuning_bench.onebox.box import OneBox

# What Nova itself keeps in an instances path once its servers are gone: the
# image cache, its lock files, the directory live snapshots are made in and
# the compute node's identity.
NOVA_KEEPS = {"_base", "locks", "snapshots", "compute_nodes", "compute_id"}


@dataclasses.dataclass
class Outcome:
    """What one server's life cycle showed."""

    compute: Compute
    server_id: str = ""
    boots: list[Boot] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    snapshot_pattern_ok: bool | None = None
    leftovers: list[str] = dataclasses.field(default_factory=list)


class Server:
    """One server on one compute, with its guest watched."""

    def __init__(
        self, nova: Nova, compute: Compute, daemon: PrivateLibvirtd, outcome: Outcome
    ) -> None:
        self.nova = nova
        self.compute = compute
        self.daemon = daemon
        self.outcome = outcome
        self.contents = Contents()
        self.watch: ConsoleWatch | None = None

    @property
    def id(self) -> str:
        return self.outcome.server_id

    def boot(self, image: str, flavor: str) -> None:
        self.outcome.server_id = self.nova.boot(
            f"onebox-{self.compute.name}", image, flavor, self.compute.host
        )
        self.watch = ConsoleWatch(self.compute.instances, self.id)
        self.step("boot", lambda: None, "ACTIVE")

    def step(self, name: str, act: Callable[[], object], status: str, guest: bool = True) -> None:
        """Run ``act``, wait for ``status``, then (``guest``) for the guest's report."""
        assert self.watch is not None
        self.watch.mark()
        t0 = time.monotonic()
        act()
        self.nova.wait(self.id, status)
        self.outcome.seconds[name] = time.monotonic() - t0
        if not guest:
            return
        report = self.watch.wait_report()
        self.record(name, report)

    def record(self, name: str, report: console.GuestReport) -> None:
        conn = self.daemon.open()
        try:
            domain = conn.lookupByUUIDString(self.id)
            xml = domain.XMLDesc(0)
            argv = domains.qemu_cmdline_from_log(self.daemon.qemu_log(domain.name()))
        finally:
            conn.close()
        boot = Boot(name, report, xml, disk_views(xml, argv))
        self.outcome.boots.append(boot)
        self.outcome.problems.extend(self.contents.check(boot))

    def action(self, body: dict[str, object]) -> Callable[[], object]:
        return lambda: self.nova.action(self.id, body)


def snapshot(server: Server, glance: Glance, images: Path) -> None:
    """A live snapshot; its root disk must hold what the guest wrote on vda."""
    answer = server.nova.action(server.id, {"createImage": {"name": f"{server.id}-snap"}})
    image_id = answer["image_id"]
    deadline = time.monotonic() + 300
    while (image := glance.image(image_id))["status"] != "active":
        if image["status"] in ("killed", "deleted") or time.monotonic() > deadline:
            raise OneboxError(f"snapshot {image_id} of {server.id} is {image['status']}")
        time.sleep(0.5)
    server.nova.wait(server.id, "ACTIVE")
    data = domains.read_image(
        images / image_id, image["disk_format"], console.PATTERN_OFFSET, console.PATTERN_LENGTH
    )
    server.outcome.snapshot_pattern_ok = data == console.expected_pattern(
        server.contents.by_file.get("disk") or "vda"
    )
    glance.delete(image_id)


def leftovers(instances: Path, server_id: str) -> list[str]:
    """What is left of a deleted server in an instances path, besides what Nova keeps."""
    found = []
    for root, dirs, files in os.walk(instances):
        rel = Path(root).relative_to(instances)
        for name in dirs + files:
            path = rel / name
            if server_id in str(path) or (rel == Path(".") and name not in NOVA_KEEPS):
                found.append(str(path))
    return sorted(found)


def run(
    nova: Nova,
    glance: Glance,
    images: Path,
    compute: Compute,
    daemon: PrivateLibvirtd,
    image: str,
    flavors: tuple[str, str],
) -> Outcome:
    """The whole life cycle of one server on ``compute``; never raises on a check."""
    outcome = Outcome(compute)
    server = Server(nova, compute, daemon, outcome)
    nova.only_enabled(compute.host)
    server.boot(image, flavors[0])
    server.step("hard reboot", server.action({"reboot": {"type": "HARD"}}), "ACTIVE")
    server.step("stop", server.action({"os-stop": None}), "SHUTOFF", guest=False)
    server.step("start", server.action({"os-start": None}), "ACTIVE")
    snapshot(server, glance, images)
    server.step("resize", server.action({"resize": {"flavorRef": flavors[1]}}), "VERIFY_RESIZE")
    server.step("confirm resize", server.action({"confirmResize": None}), "ACTIVE", guest=False)
    server.step("shelve", server.action({"shelve": None}), "SHELVED_OFFLOADED", guest=False)
    # Unshelving makes a new ephemeral disk; the root disk comes back from the snapshot.
    server.contents.forget(
        *(os.path.basename(d.source) for d in outcome.boots[-1].disks if d.target == "vdb")
    )
    server.step("unshelve", server.action({"unshelve": None}), "ACTIVE")
    # Nova's rescue boots a kernel image with a command line of its own: the
    # guest only idles, and the rescue domain must hold the server's root disk.
    server.step("rescue", server.action({"rescue": {}}), "RESCUE")
    rescued = {os.path.basename(d.source): d.target for d in outcome.boots[-1].disks}
    if rescued.get("disk.rescue") != "vda" or rescued.get("disk") != "vdb":
        outcome.problems.append(f"rescue: the disks are {rescued}, not disk.rescue, disk")
    if not outcome.boots[-1].report.idle:
        outcome.problems.append("rescue: the rescue guest did not boot Nova's command line")
    server.step("unrescue", server.action({"unrescue": None}), "ACTIVE")
    t0 = time.monotonic()
    nova.call("DELETE", f"/servers/{server.id}")
    nova.wait_gone(server.id)
    outcome.seconds["delete"] = time.monotonic() - t0
    outcome.leftovers = leftovers(compute.instances, server.id)
    return outcome


def run_all(box: OneBox) -> dict[str, Outcome]:
    """The life cycle of one server on each of the box's computes, one after the other."""
    return {
        name: run(box.nova, box.glance, box.images, compute, box.daemons[name], box.image,
                  box.flavors)
        for name, compute in box.computes.items()
    }  # fmt: skip
