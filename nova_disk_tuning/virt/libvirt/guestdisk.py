"""A disk ready to be given to a guest, as image backends and volume drivers hand it over.

Both kinds of producers create or connect storage, describe it with a
:class:`LibvirtConfigGuestDisk` (source, target, format: no tuning) and
*measure* its :class:`DiskFacts` after creation. The compute driver passes
the facts of all disks to ``tuning.tune_guest`` and applies the result to the
configs; nobody else sets ``driver_cache``, ``driver_io`` and friends.
"""

from __future__ import annotations

from dataclasses import dataclass

from nova_disk_tuning import exception
from nova_disk_tuning.virt.libvirt.config import LibvirtConfigGuestDisk
from nova_disk_tuning.virt.libvirt.facts import DiskFacts


@dataclass
class GuestDisk:
    config: LibvirtConfigGuestDisk
    facts: DiskFacts
    # Files or devices created for this disk, removed if the spawn fails
    # part-way (never the cached base image, never a volume).
    created: tuple[str, ...] = ()
    # What the backend did and why, for `explain` and the logs
    # (e.g. "fallocate(KEEP_SIZE) 10 GiB" or "ext2 cannot fallocate: sparse").
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.config.target_dev != self.facts.name:
            raise exception.InvalidDiskConfig(
                disk=self.facts.name,
                reason=f"facts name {self.facts.name!r} differs from the config's "
                f"target_dev {self.config.target_dev!r}; they must match for tuning",
            )
