"""Same-host resize measured through Nova's API, each driver side by side.

One server per compute, on a flavor with a 4 GiB root disk and a 1 GiB
ephemeral disk; then ``repeat`` rounds, the computes' order alternating from
round to round, each resizing its server to the other flavor (the same disks,
another ``hw:disk_iothreads``) and confirming. A resize is timed from the API
call until the server is VERIFY_RESIZE (the disks copied, the guest started
again); the guest's report after it must show both disks kept what it wrote.
"""

from __future__ import annotations

import dataclasses
import statistics

from nova_disk_tuning_bench.onebox.box import OneBox
from nova_disk_tuning_bench.onebox.lifecycle import Outcome, Server
from nova_disk_tuning_bench.onebox.procs import OneboxError


@dataclasses.dataclass
class ResizeTimes:
    driver: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def measure(box: OneBox, repeat: int) -> tuple[dict[str, ResizeTimes], list[str]]:
    """Resize times per compute, and the problems the guests showed."""
    nova = box.nova
    flavors = (
        nova.flavor("onebox.resize-a", vcpus=2, disk=4, ephemeral=1, **{"hw:disk_iothreads": "2"}),
        nova.flavor("onebox.resize-b", vcpus=2, disk=4, ephemeral=1, **{"hw:disk_iothreads": "1"}),
    )
    servers = {}
    for name, compute in box.computes.items():
        outcome = Outcome(compute)
        server = Server(nova, compute, box.daemons[name], outcome)
        nova.only_enabled(compute.host)
        server.boot(box.image, flavors[0])
        servers[name] = server
    times = {name: ResizeTimes(s.compute.driver, []) for name, s in servers.items()}
    order = list(servers)
    for round_ in range(repeat):
        for name in order if round_ % 2 == 0 else reversed(order):
            server = servers[name]
            nova.only_enabled(server.compute.host)
            flavor = flavors[(round_ + 1) % 2]
            server.step("resize", server.action({"resize": {"flavorRef": flavor}}), "VERIFY_RESIZE")
            times[name].seconds.append(server.outcome.seconds["resize"])
            server.step("confirm", server.action({"confirmResize": None}), "ACTIVE", guest=False)
    problems = [p for s in servers.values() for p in s.outcome.problems]
    for server in servers.values():
        nova.call("DELETE", f"/servers/{server.id}")
    for server in servers.values():
        nova.wait_gone(server.id)
    if not all(t.seconds for t in times.values()):
        raise OneboxError("no resize was measured")
    return times, problems
