"""Facts about a disk at a path, measured the way image backends and volume drivers do.

``explain --disk`` and ``audit`` describe disks nobody spawned here; they
measure them with these functions, which ask the same :class:`StorageProbe`
questions (allocation, O_DIRECT, storage kind) as the backends, so a disk
explained by path and the same disk of a spawned instance get the same facts.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.images.source import QCOW2_MAGIC
from nova_disk_tuning.storage.probe import StorageProbe, covers
from nova_disk_tuning.virt.libvirt import loader
from nova_disk_tuning.virt.libvirt.tuning.facts import DiskFacts

SPEC_KEYS = ("path", "name", "format", "type", "bus", "volume")
SPEC_FLAGS = ("shareable", "preallocated")


@dataclasses.dataclass(frozen=True)
class DiskSpec:
    """One ``--disk`` argument: what the operator said; the rest is measured."""

    path: str
    name: str | None = None
    format: str | None = None
    type: str | None = None
    bus: str = "virtio"
    shareable: bool = False
    preallocated: bool = False
    # A volume driver's name (driver_volume_type): the disk is a volume it
    # attached, with that driver's AIO preference.
    volume: str | None = None


def parse_disk_spec(text: str) -> DiskSpec:
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep and key in SPEC_FLAGS:
            values[key] = True
        elif sep and key in SPEC_KEYS and value:
            values[key] = value.strip()
        else:
            raise exception.InvalidConfig(
                reason=f"--disk {text!r}: cannot use {item!r}. Use key=value with key in "
                f"{', '.join(SPEC_KEYS)}, or the flags {', '.join(SPEC_FLAGS)}."
            )
    if "path" not in values:
        raise exception.InvalidConfig(reason=f"--disk {text!r} needs path=PATH")
    if values.get("type") not in (None, "file", "block"):
        raise exception.InvalidConfig(reason=f"--disk {text!r}: type must be file or block")
    return DiskSpec(**values)


def measure_disks(
    specs: Sequence[DiskSpec], probe: StorageProbe, qemu_img: QemuImg
) -> list[DiskFacts]:
    facts: list[DiskFacts] = []
    used: dict[str, int] = {}
    for spec in specs:
        name = spec.name
        if name is None:
            prefix = "vd" if spec.bus == "virtio" else "sd"
            name = prefix + "abcdefghijklmnopqrstuvwxyz"[used.get(prefix, 0) % 26]
            used[prefix] = used.get(prefix, 0) + 1
        facts.append(measure_disk(spec, name, probe, qemu_img))
    return facts


def measure_disk(spec: DiskSpec, name: str, probe: StorageProbe, qemu_img: QemuImg) -> DiskFacts:
    """The facts an image backend would report for this disk, measured now."""
    try:
        st = os.stat(spec.path)
    except FileNotFoundError:
        raise exception.InvalidDiskConfig(
            disk=spec.path, reason="no such file or device; check the path"
        ) from None
    is_block = stat.S_ISBLK(st.st_mode)
    if not is_block and not stat.S_ISREG(st.st_mode):
        raise exception.InvalidDiskConfig(
            disk=spec.path, reason="neither a regular file nor a block device"
        )
    source_type = "block" if is_block else "file"
    if spec.type is not None and spec.type != source_type:
        raise exception.InvalidDiskConfig(
            disk=spec.path, reason=f"type={spec.type} given, but it is a {source_type}"
        )
    fmt = spec.format or _sniff_format(spec.path)
    allocation = probe.allocation(spec.path)
    size, fully = allocation.size, allocation.fully_allocated
    backing = None
    if fmt != "raw":
        # The allocation must cover the *virtual* size (KubeVirt's rule),
        # which only qemu-img knows; its verdict is derived from the numbers.
        info = qemu_img.info(spec.path, fmt)
        size, backing = int(info.virtual_size), info.backing_file
        fully = covers(allocation.allocated, size)
    return DiskFacts(
        name=name,
        source_type=source_type,
        format=fmt,
        path=os.path.abspath(spec.path),
        size=size,
        allocated=allocation.allocated,
        fully_allocated=fully,
        backing_file=backing,
        shareable=spec.shareable,
        bus=spec.bus,
        driver="explain",
        direct_io=probe.supports_direct_io(spec.path),
        storage_kind=probe.storage_kind(spec.path),
        preallocated=spec.preallocated,
    )


def as_volume(facts: DiskFacts, spec: DiskSpec, conf: cfg.ConfigOpts) -> DiskFacts:
    """The facts of a volume that ``spec.volume``'s driver attached at this path."""
    if spec.volume is None:
        return facts
    driver = loader.volume_driver(spec.volume)(conf, StorageProbe())
    hint = driver.aio_hint({"driver_volume_type": spec.volume, "data": {}})
    return facts.replace(is_volume=True, aio_hint=hint, driver=spec.volume)


def _sniff_format(path: str) -> str:
    # Only the two formats instance disks use; anything else must be named.
    with open(path, "rb") as handle:
        return "qcow2" if handle.read(4) == QCOW2_MAGIC else "raw"
