"""IOThread planning for one guest: how many, and which disk uses which.

Part of the tuning policy (``tuning.tune_guest`` calls it): an IOThread takes
a disk's I/O out of QEMU's main loop (4 KiB random writes in a guest here:
about 6-8k IOPS without, 14-15k with). It only helps a disk that is *bound*
to it: Nova 33 defines one IOThread and binds no disk, so nothing changes.
We define only IOThreads that some device uses.

virtio-blk disks are bound round-robin (``<driver iothread='k'>``), or, where
libvirt and QEMU have per-queue mapping (``QUEUE_MAPPING_*`` in
:mod:`nova_disk_tuning.common.versions`), their queues are spread over all
IOThreads.
Disks on the ``scsi`` bus sit on the guest's virtio-scsi controller, which
owns one IOThread and the queues for all of them. Other buses (sata, ide,
usb) cannot use an IOThread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common.versions import (
    QUEUE_MAPPING_LIBVIRT,
    QUEUE_MAPPING_QEMU,
    short_version,
)
from nova_disk_tuning.policy.facts import Decision, DiskFacts, HostCaps

LOG = logging.getLogger(__name__)

EXTRA_SPEC = "hw:disk_iothreads"


class ControllerConfig(Protocol):
    """A virtio-scsi ``<controller>`` config of either family (the agent's or Nova's)."""

    model: str | None
    driver_iothread: int | None
    driver_queues: int | None


@dataclass(frozen=True)
class DeviceIOThreads:
    """IOThread binding and queues of one disk or controller."""

    iothread: Decision
    # {IOThread id: [virtqueue ids]}; excludes ``iothread``.
    iothread_queues: Decision
    queues: Decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "iothread": self.iothread.to_dict(),
            "iothread_queues": self.iothread_queues.to_dict(),
            "queues": self.queues.to_dict(),
        }


@dataclass(frozen=True)
class IOThreadPlan:
    """``<iothreads>N</iothreads>`` of a guest and every device's binding."""

    count: Decision
    disks: Mapping[str, DeviceIOThreads]
    # None when no disk is on the scsi bus (no controller to bind).
    scsi_controller: DeviceIOThreads | None

    def for_disk(self, name: str) -> DeviceIOThreads:
        return self.disks[name]

    @property
    def thread_count(self) -> int:
        """How many IOThreads the plan defines: ``count.value``, 0 for none."""
        return self.count.int_value() or 0

    def apply_to_controller(self, controller: ControllerConfig) -> None:
        """Set ``driver_iothread``/``driver_queues`` on a virtio-scsi controller config."""
        if self.scsi_controller is not None:
            controller.driver_iothread = self.scsi_controller.iothread.int_value()
            controller.driver_queues = self.scsi_controller.queues.int_value()

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count.to_dict(),
            "disks": {name: d.to_dict() for name, d in self.disks.items()},
            "scsi_controller": None
            if self.scsi_controller is None
            else self.scsi_controller.to_dict(),
        }


def requested_iothreads(
    conf: cfg.ConfigOpts, extra_specs: Mapping[str, str] | None
) -> tuple[int, str]:
    """The IOThread count asked for, and where it came from."""
    raw = (extra_specs or {}).get(EXTRA_SPEC)
    if raw is None:
        return conf.disk_tuning.iothreads, "[disk_tuning] iothreads"
    text = str(raw).strip()
    if not text.isdigit():
        raise exception.InvalidFlavorExtraSpec(
            key=EXTRA_SPEC,
            value=raw,
            reason="expected a non-negative integer (0 disables IOThreads). Fix the flavor "
            "with `openstack flavor set --property hw:disk_iothreads=N`.",
        )
    return int(text), f"flavor extra spec {EXTRA_SPEC}"


def plan_iothreads(
    disks: Sequence[DiskFacts],
    vcpus: int,
    conf: cfg.ConfigOpts,
    host: HostCaps,
    extra_specs: Mapping[str, str] | None = None,
) -> IOThreadPlan:
    if vcpus < 1:
        raise exception.InvalidConfig(reason=f"a guest needs at least one vCPU, got {vcpus}")
    wanted, source = requested_iothreads(conf, extra_specs)
    queues = _queues(conf, vcpus)
    blk = [d.name for d in disks if d.bus == "virtio"]
    scsi = [d.name for d in disks if d.bus == "scsi"]
    devices = len(blk) + (1 if scsi else 0)
    mapping, mapping_why = _mapping(conf, host, wanted, blk)

    if wanted == 0 or devices == 0:
        if wanted == 0:
            why = f"{source}=0: disk I/O runs in QEMU's main loop"
        else:
            why = (
                f"{source}={wanted}, but no virtio disk or virtio-scsi controller would use "
                "one: an IOThread no disk is bound to does nothing"
            )
            LOG.info("No IOThreads defined: %s", why)
        unbound = DeviceIOThreads(Decision(None, why), Decision(None, why), queues)
        plan: dict[str, DeviceIOThreads] = {d.name: _other_bus(d.bus, queues) for d in disks}
        plan.update({name: unbound for name in blk})
        plan.update({name: _on_controller(None, queues) for name in scsi})
        unbound_controller = DeviceIOThreads(Decision(None, why), Decision(None, why), queues)
        return IOThreadPlan(Decision(None, why), plan, unbound_controller if scsi else None)

    # Without per-queue mapping each device uses one IOThread: more than
    # there are devices would leave some unused.
    count = wanted if mapping else min(wanted, devices)
    count_why = f"{source}={wanted}"
    if count < wanted:
        count_why += f", capped at {count}: only {devices} device(s) to bind"
        LOG.info("IOThreads: %s", count_why)

    plan = {d.name: _other_bus(d.bus, queues) for d in disks}
    for index, name in enumerate(blk):
        if mapping:
            spread = spread_queues(index, _queue_count(queues), count)
            plan[name] = DeviceIOThreads(
                Decision(None, "per-queue mapping instead of one IOThread"),
                Decision(spread, f"{queues.value} queue(s) spread over {count} IOThreads"),
                queues,
            )
        else:
            thread = index % count + 1
            plan[name] = DeviceIOThreads(
                Decision(thread, f"virtio-blk disk {index + 1} of {len(blk)}, round-robin"),
                Decision(None, mapping_why),
                queues,
            )
    controller: DeviceIOThreads | None = None
    if scsi:
        thread = len(blk) % count + 1
        controller = DeviceIOThreads(
            Decision(thread, f"virtio-scsi controller of {len(scsi)} disk(s)"),
            Decision(None, "per-queue mapping is for virtio-blk disks"),
            queues,
        )
        for name in scsi:
            plan[name] = _on_controller(thread, queues)
    return IOThreadPlan(Decision(count, count_why), plan, controller)


def _queues(conf: cfg.ConfigOpts, vcpus: int) -> Decision:
    configured = conf.disk_tuning.disk_queues
    if configured:
        return Decision(configured, f"[disk_tuning] disk_queues={configured}")
    return Decision(vcpus, f"one queue per vCPU ({vcpus}; [disk_tuning] disk_queues=0)")


def _queue_count(queues: Decision) -> int:
    """The value of a :func:`_queues` decision, which is always a count."""
    if not isinstance(queues.value, int):
        raise TypeError(f"queue count {queues.value!r} is not an integer ({queues.reason})")
    return queues.value


def _mapping(
    conf: cfg.ConfigOpts, host: HostCaps, wanted: int, blk: Sequence[str]
) -> tuple[bool, str]:
    if not conf.disk_tuning.iothread_queue_mapping:
        return False, "per-queue mapping off ([disk_tuning] iothread_queue_mapping)"
    unsupported = queue_mapping_unsupported(host)
    if unsupported:
        return False, unsupported
    if wanted < 2:
        return False, "per-queue mapping needs at least two IOThreads"
    if not blk:
        return False, "no virtio-blk disk to map"
    return True, ""


def queue_mapping_unsupported(host: HostCaps) -> str | None:
    """Why this host's libvirt or QEMU cannot map queues to IOThreads, or None."""
    if host.iothread_queue_mapping:
        return None
    return (
        f"per-queue mapping needs libvirt >= {short_version(QUEUE_MAPPING_LIBVIRT)} and "
        f"QEMU >= {short_version(QUEUE_MAPPING_QEMU)} ({host.describe()})"
    )


def spread_queues(index: int, queues: int, count: int) -> dict[int, list[int]]:
    """Queue q of the index-th disk -> IOThread (index + q) % count + 1.

    Starting each disk at a different IOThread keeps queue 0 of every disk
    (the one a single-threaded guest workload uses) off one IOThread.
    """
    spread: dict[int, list[int]] = {}
    for queue in range(queues):
        spread.setdefault((index + queue) % count + 1, []).append(queue)
    return dict(sorted(spread.items()))


def _other_bus(bus: str, queues: Decision) -> DeviceIOThreads:
    why = f"bus {bus}: only virtio-blk disks and virtio-scsi controllers take IOThreads"
    return DeviceIOThreads(Decision(None, why), Decision(None, why), Decision(None, why))


def _on_controller(thread: int | None, queues: Decision) -> DeviceIOThreads:
    where = f"IOThread {thread}" if thread else "no IOThread"
    why = f"on the virtio-scsi controller ({where}, {queues.value} queues)"
    return DeviceIOThreads(Decision(None, why), Decision(None, why), Decision(None, why))
