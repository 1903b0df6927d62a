"""``[libvirt] volume_clear = zero``: how much of a volume to wipe, and wiping it fast.

One home for Nova's wipe semantics, used by the project's LVM backend and by
the Nova drop-in: ``volume_clear_size`` MiB from the start of the volume, or
all of it when that is 0 or larger than the volume. The zeroes come from the
fast-zero chain (:mod:`.zero`): on a block device the device zeroes in place
(WRITE ZEROES, BLKZEROOUT) where ``shred -n0 -z`` streams every byte.
"""

from __future__ import annotations

from nova_disk_tuning.common.units import MiB
from nova_disk_tuning.storage.probe import StorageProbe
from nova_disk_tuning.storage.zero import Zeroer, ZeroResult


def wipe_length(volume_size: int, clear_size_mib: int) -> int:
    """Bytes to wipe from the start: Nova's rule for ``volume_clear_size``."""
    limit = clear_size_mib * MiB
    return min(limit, volume_size) if limit else volume_size


def zero_volume(
    path: str,
    clear_size_mib: int,
    zeroer: Zeroer | None = None,
    probe: StorageProbe | None = None,
) -> ZeroResult:
    """Zero the part of ``path`` that ``volume_clear_size`` says, in place."""
    probe = probe or StorageProbe()
    length = wipe_length(probe.allocation(path).size, clear_size_mib)
    return (zeroer or Zeroer(probe=probe)).zero(path, 0, length)
