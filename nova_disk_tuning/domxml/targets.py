"""Guest target names (``vda``, ``sdb``): the next free one per bus, each used once."""

from __future__ import annotations

from nova_disk_tuning import exception

# The name prefix of each bus, as libvirt and Nova name targets.
BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd"}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


class TargetNames:
    """Free target names per bus: vda, vdb, ... / sda, sdb, ...; a 27th disk is refused."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def next(self, bus: str) -> str:
        prefix = BUS_PREFIX.get(bus)
        if prefix is None:
            raise exception.InvalidConfig(
                reason=f"disk bus {bus!r} is not supported; use one of {', '.join(BUS_PREFIX)}"
            )
        for letter in _LETTERS:
            if prefix + letter not in self.used:
                return self.take(prefix + letter)
        raise exception.InvalidConfig(
            reason=f"more than {len(_LETTERS)} disks on bus {bus}; put some on another bus"
        )

    def take(self, name: str) -> str:
        if name in self.used:
            raise exception.InvalidDiskConfig(
                disk=name, reason="target already used by another disk of this instance"
            )
        self.used.add(name)
        return name
