"""The instance record (``instance.json``): what a spawn made, typed, and its JSON form.

The record is what lets an instance outlive the process that spawned it:
its flavor and image, every disk with the backend that made it and the facts
measured from it, its volumes and the tuning it got with the reasons. A
spawn writes it first in state ``building`` (see :mod:`.store`) and lists
each disk in it before the disk is made (an *announced* entry: its kind,
target, backend and the names it will have), so a killed spawn can be found
and removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.domxml import LibvirtConfigGuestDisk
from nova_disk_tuning.policy.facts import DiskFacts
from nova_disk_tuning.policy.result import GuestTuning

RECORD_VERSION = 1
BUILDING = "building"
CREATED = "created"
BROKEN = "broken"


@dataclasses.dataclass
class DiskEntry:
    """One disk of an instance: what it is for, where it is, who made it."""

    kind: str  # root, ephemeral, swap or volume
    target: str
    bus: str | None
    path: str | None  # None for network disks (rbd)
    format: str
    source_type: str
    backend: str | None  # the image backend that made it; None for volumes
    created: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    made: bool = True  # False: announced, being made (or its maker was killed)

    @classmethod
    def announced(
        cls, kind: str, target: str, names: tuple[str, ...], backend: str | None
    ) -> DiskEntry:
        """A disk about to be made under ``names`` (what its backend's destroy takes)."""
        return cls(
            kind=kind,
            target=target,
            bus=None,
            path=None,
            format="",
            source_type="",
            backend=backend,
            created=list(names),
            made=False,
        )

    def removable(self) -> list[GuestDisk] | list[str]:
        """What the backend's ``destroy()`` takes for this disk."""
        return [self.guest_disk()] if self.made else list(self.created)

    @classmethod
    def of(cls, kind: str, disk: GuestDisk, backend: str | None) -> DiskEntry:
        return cls(
            kind=kind,
            target=disk.facts.name,
            bus=disk.config.target_bus,
            path=disk.facts.path,
            format=disk.facts.format,
            source_type=disk.facts.source_type,
            backend=None if kind == "volume" else backend,
            created=list(disk.created),
            notes=list(disk.notes),
            facts=disk.facts.to_dict(),
        )

    def disk_facts(self) -> DiskFacts:
        return DiskFacts.from_dict(self.facts)

    def guest_disk(self) -> GuestDisk:
        """The disk as its backend's ``destroy()`` takes it."""
        config = LibvirtConfigGuestDisk(
            source_type=self.source_type,
            source_path=self.path,
            driver_format=self.format,
            target_dev=self.target,
            target_bus=self.bus,
        )
        return GuestDisk(config, self.disk_facts(), tuple(self.created), tuple(self.notes))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiskEntry:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclasses.dataclass
class InstanceRecord:
    """``instance.json``. ``state``: building (a spawn is, or was, making it) or created."""

    name: str
    uuid: str
    state: str = CREATED
    pid: int | None = None  # of the spawn, while building
    problem: str | None = None  # why a broken record could not be read
    version: int = RECORD_VERSION
    created_at: str = ""
    connection_uri: str = ""
    flavor: dict[str, Any] = dataclasses.field(default_factory=dict)
    image: dict[str, Any] = dataclasses.field(default_factory=dict)
    kernel: str | None = None
    ramdisk: str | None = None
    image_backend: str | None = None
    disks: list[DiskEntry] = dataclasses.field(default_factory=list)
    volumes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    tuning: dict[str, Any] | None = None

    @classmethod
    def broken(cls, uuid: str, problem: str) -> InstanceRecord:
        """A record that cannot be read, listed under its uuid so it can be destroyed."""
        return cls(name=uuid, uuid=uuid, state=BROKEN, problem=problem)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceRecord:
        """Raise ValueError when ``data`` is not a record (a missing name or uuid)."""
        if not isinstance(data.get("name"), str) or not isinstance(data.get("uuid"), str):
            raise ValueError("no name or uuid")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {key: value for key, value in data.items() if key in names}
        fields["disks"] = [DiskEntry.from_dict(d) for d in data.get("disks") or []]
        # Records written before spawns claimed their directory have no state.
        fields.setdefault("state", CREATED)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def guest_tuning(self) -> GuestTuning:
        return GuestTuning.from_dict(self.tuning or {})

    def disk_facts(self) -> list[DiskFacts]:
        return [entry.disk_facts() for entry in self.disks]
