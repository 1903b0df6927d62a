"""What the policy decided: per disk and per guest, every value with its reason.

These objects apply themselves to the libvirt config objects, and round-trip
through JSON (an instance record keeps the tuning a guest got at spawn).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, cast

from nova_disk_tuning import exception
from nova_disk_tuning.common.versions import parse_version
from nova_disk_tuning.policy.facts import Decision, HostCaps
from nova_disk_tuning.policy.iothreads import ControllerConfig, DeviceIOThreads, IOThreadPlan

NOT_PLANNED = Decision(None, "not planned: IOThreads and queues are planned per guest")


class DiskConfig(Protocol):
    """A ``<disk>`` config of either family: the agent's (:mod:`nova_disk_tuning.domxml`)
    or the one Nova built (``nova.virt.libvirt.config``, taught the rest by the drop-in).

    Both name the attributes the policy sets the same way (Nova's names).
    """

    target_dev: str | None
    driver_cache: str | None
    driver_io: str | None
    driver_discard: str | None
    driver_detect_zeroes: str | None
    driver_discard_no_unref: str | None
    driver_iothread: int | None
    driver_iothread_queues: dict[int, list[int]]
    driver_queues: int | None


class GuestConfig(Protocol):
    """A ``<domain>`` config of either family: its IOThread count and its devices."""

    iothreads: int | None

    @property
    def devices(self) -> Sequence[object]: ...


@dataclass(frozen=True)
class DiskTuning:
    """The ``<driver>`` settings of one disk, each with its reason."""

    disk: str
    cache: Decision
    io: Decision
    discard: Decision
    detect_zeroes: Decision
    discard_no_unref: Decision
    iothread: Decision = NOT_PLANNED
    # {IOThread id: [virtqueue ids]} where per-queue mapping is used.
    iothread_queues: Decision = NOT_PLANNED
    queues: Decision = NOT_PLANNED

    # Setting -> LibvirtConfigGuestDisk attribute (Nova's names).
    ATTRIBUTES: ClassVar[dict[str, str]] = {
        "cache": "driver_cache",
        "io": "driver_io",
        "discard": "driver_discard",
        "detect_zeroes": "driver_detect_zeroes",
        "discard_no_unref": "driver_discard_no_unref",
        "iothread": "driver_iothread",
        "iothread_queues": "driver_iothread_queues",
        "queues": "driver_queues",
    }

    def settings(self) -> Iterator[tuple[str, Decision]]:
        for name in self.ATTRIBUTES:
            yield name, getattr(self, name)

    def apply(self, disk_config: DiskConfig) -> None:
        """Set every ``driver_*`` attribute on a disk config (either family).

        A None value is set too: the policy decided to emit nothing, which
        overrides whatever a backend may have put there.
        """
        for name, decision in self.settings():
            value = decision.value
            if isinstance(value, Mapping):
                value = {key: list(queues) for key, queues in value.items()}
            setattr(disk_config, self.ATTRIBUTES[name], value)

    def to_dict(self) -> dict[str, Any]:
        return {"disk": self.disk, **{name: d.to_dict() for name, d in self.settings()}}


@dataclass(frozen=True)
class GuestTuning:
    """Everything the policy decided for one guest."""

    host: HostCaps
    disks: tuple[DiskTuning, ...]
    iothreads: IOThreadPlan
    _by_name: dict[str, DiskTuning] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {t.disk: t for t in self.disks})

    def disk(self, name: str) -> DiskTuning:
        try:
            return self._by_name[name]
        except KeyError:
            raise exception.InvalidDiskConfig(
                disk=name, reason=f"no such disk in this guest; known: {sorted(self._by_name)}"
            ) from None

    def apply_to_guest(self, guest: GuestConfig) -> None:
        """Set ``iothreads`` on a guest config (either family) and tune its devices.

        Disks are matched by ``target_dev`` against ``DiskFacts.name``; a
        virtio-scsi controller gets the controller plan. Other devices
        (interfaces, consoles) are left alone.
        """
        guest.iothreads = self.iothreads.thread_count or None
        for device in guest.devices:
            target = getattr(device, "target_dev", None)
            if target is not None and target in self._by_name:
                self._by_name[target].apply(cast(DiskConfig, device))
            elif getattr(device, "model", None) == "virtio-scsi":
                self.iothreads.apply_to_controller(cast(ControllerConfig, device))

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host.to_dict(),
            "disks": [t.to_dict() for t in self.disks],
            "iothreads": self.iothreads.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuestTuning:
        """The GuestTuning that :meth:`to_dict` stored (in an instance record)."""
        host = data["host"]
        caps = HostCaps(
            libvirt_version=parse_version(host["libvirt_version"]),
            qemu_version=parse_version(host["qemu_version"]),
            kernel_io_uring=bool(host.get("kernel_io_uring")),
            kernel_io_uring_detail=host.get("kernel_io_uring_detail", ""),
        )
        disks = []
        for disk in data["disks"]:
            disks.append(
                DiskTuning(
                    disk=disk["disk"],
                    **{name: _decision(disk[name]) for name in DiskTuning.ATTRIBUTES},
                )
            )
        plan = data["iothreads"]
        controller = plan.get("scsi_controller")
        iothreads = IOThreadPlan(
            count=_decision(plan["count"]),
            disks={name: _device_iothreads(d) for name, d in plan["disks"].items()},
            scsi_controller=None if controller is None else _device_iothreads(controller),
        )
        return cls(host=caps, disks=tuple(disks), iothreads=iothreads)


def _decision(data: Mapping[str, Any]) -> Decision:
    value = data.get("value")
    if isinstance(value, dict):
        # JSON turned the IOThread ids of per-queue mapping into strings.
        value = {int(k): [int(q) for q in v] for k, v in value.items()}
    return Decision(value, data.get("reason", ""))


def _device_iothreads(data: Mapping[str, Any]) -> DeviceIOThreads:
    return DeviceIOThreads(
        _decision(data["iothread"]), _decision(data["iothread_queues"]), _decision(data["queues"])
    )
