"""THE one way a disk's facts are measured: a file, a block device, a network disk, a volume.

Every producer of :class:`DiskFacts` comes here: the agent's image backends
(after they made a disk) and volume drivers (after os-brick connected one),
the Nova drop-in (for the disks of a guest config Nova built), ``explain
--disk``, ``audit`` and the benchmarks. So a disk gets the same facts
whichever path describes it: the same :class:`StorageProbe` questions
(kind of source, allocation, O_DIRECT, storage kind) and, for images that
are not raw, the virtual size from ``qemu-img info``.

Nothing is decided here; the facts go to :mod:`.decide`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nova_disk_tuning import exception
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.images.source import QCOW2_MAGIC
from nova_disk_tuning.policy import transports
from nova_disk_tuning.policy.facts import DiskFacts
from nova_disk_tuning.storage.probe import StorageProbe, covers


def measure_local(
    path: str,
    *,
    name: str,
    probe: StorageProbe,
    qemu_img: QemuImg,
    format: str | None = None,
    source_type: str | None = None,
    bus: str = "virtio",
    shareable: bool = False,
    driver: str | None = None,
) -> DiskFacts:
    """The facts of the file or block device at ``path``, measured now.

    ``format`` None: qcow2 when the file starts with qcow2's magic, else raw
    (the two formats instance disks use; anything else must be named).
    ``source_type``, when given, is what the caller expects the path to be;
    anything else is refused. A qcow2's allocation must cover its *virtual*
    size (KubeVirt's rule), which only qemu-img knows.
    """
    found = probe.source_type(path)
    if source_type is not None and source_type != found:
        raise exception.InvalidDiskConfig(
            disk=path, reason=f"type={source_type} given, but it is a {found}"
        )
    fmt = format or sniff_format(path)
    allocation = probe.allocation(path)
    size, fully, backing = allocation.size, allocation.fully_allocated, None
    if fmt != "raw":
        info = qemu_img.info(path, fmt)
        size, backing = int(info.virtual_size), info.backing_file
        fully = covers(allocation.allocated, size)
    return DiskFacts(
        name=name,
        source_type=found,
        format=fmt,
        path=os.path.abspath(path),
        size=size,
        allocated=allocation.allocated,
        fully_allocated=fully,
        backing_file=backing,
        shareable=shareable,
        bus=bus,
        driver=driver,
        direct_io=probe.supports_direct_io(path),
        storage_kind=probe.storage_kind(path),
    )


def measure_network(
    name: str,
    *,
    format: str = "raw",
    size: int | None = None,
    bus: str = "virtio",
    shareable: bool = False,
    driver: str | None = None,
) -> DiskFacts:
    """A disk QEMU reaches with its own client: nothing on this host to measure.

    ``size`` is what the caller knows (an image backend that made it).
    """
    return DiskFacts(
        name=name,
        source_type="network",
        format=format,
        size=size,
        bus=bus,
        shareable=shareable,
        driver=driver,
    )


def as_volume(facts: DiskFacts, connection_info: Mapping[str, Any], hint: str | None) -> DiskFacts:
    """``facts`` of a volume attached by ``connection_info``'s transport, preferring ``hint``.

    The transport names the driver, and the storage kind where the host
    could not measure one; Cinder's ``data.discard`` is the volume's own
    discard request.
    """
    name = connection_info.get("driver_volume_type")
    data = connection_info.get("data")
    return facts.replace(
        is_volume=True,
        driver=name or facts.driver,
        aio_hint=hint,
        discard=requested_discard(data if isinstance(data, Mapping) else {}),
        storage_kind=facts.storage_kind or transports.storage_kind(name),
    )


def requested_discard(data: Mapping[str, Any]) -> str | None:
    """The volume's own discard request: Cinder sets ``data.discard`` for thin storage."""
    return "unmap" if data.get("discard") is True else None


def sniff_format(path: str) -> str:
    with open(path, "rb") as handle:
        return "qcow2" if handle.read(4) == QCOW2_MAGIC else "raw"
