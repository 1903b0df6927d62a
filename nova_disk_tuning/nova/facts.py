"""Facts about the disks of a guest config Nova built, measured on this host.

Nova has created every local disk before it builds the guest config (spawn,
hard reboot, resize) and has connected every volume, so each disk can be
measured the way ``nova-disk-tuning explain --disk`` measures one: the same
:func:`~nova_disk_tuning.virt.libvirt.measure.measure_disk`, the same probe.

A disk that cannot be measured (a path that is gone, a probe error) is left
out: the caller keeps Nova's own settings for it and logs why. Tuning must
never fail a boot that Nova alone would have completed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.conf import preallocation
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.storage.probe import StorageProbe
from nova_disk_tuning.virt.libvirt import loader
from nova_disk_tuning.virt.libvirt.measure import DiskSpec, measure_disk
from nova_disk_tuning.virt.libvirt.tuning.facts import DiskFacts
from nova_disk_tuning.virt.libvirt.volume.base import requested_discard

LOG = logging.getLogger(__name__)

# Devices whose <driver> the policy decides; cdroms and floppies keep Nova's.
TUNED_DEVICES = frozenset({"disk", "lun"})


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A disk left with Nova's settings, and why."""

    target: str
    reason: str


def volumes_by_target(block_device_info: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """``connection_info`` of every attached volume, by target (``vdb``)."""
    result: dict[str, Mapping[str, Any]] = {}
    for bdm in (block_device_info or {}).get("block_device_mapping") or ():
        mount = bdm.get("mount_device") or ""
        info = bdm.get("connection_info")
        if mount and info:
            result[mount.rpartition("/")[2]] = info
    return result


def measure(
    disks: Iterable[Any],
    volumes: Mapping[str, Mapping[str, Any]],
    conf: cfg.ConfigOpts,
    probe: StorageProbe,
    qemu_img: QemuImg,
) -> tuple[list[DiskFacts], list[Skipped]]:
    """Facts for each of Nova's ``LibvirtConfigGuestDisk`` objects that can be measured."""
    facts: list[DiskFacts] = []
    skipped: list[Skipped] = []
    for disk in disks:
        target = disk.target_dev
        if disk.source_device not in TUNED_DEVICES:
            continue
        try:
            facts.append(_measure_one(disk, volumes.get(target), conf, probe, qemu_img))
        except (exception.NovaDiskTuningException, OSError, ValueError) as exc:
            skipped.append(Skipped(target, str(exc)))
    return facts, skipped


def _measure_one(
    disk: Any,
    connection_info: Mapping[str, Any] | None,
    conf: cfg.ConfigOpts,
    probe: StorageProbe,
    qemu_img: QemuImg,
) -> DiskFacts:
    bus = disk.target_bus or "virtio"
    shareable = bool(getattr(disk, "shareable", False))
    volume_type = (connection_info or {}).get("driver_volume_type")
    if disk.source_type == "network":
        facts = DiskFacts(
            name=disk.target_dev,
            source_type="network",
            format=disk.driver_format or "raw",
            bus=bus,
            shareable=shareable,
            driver=volume_type or "network",
        )
    elif disk.source_type in ("file", "block") and disk.source_path:
        spec = DiskSpec(
            path=disk.source_path,
            name=disk.target_dev,
            format=disk.driver_format,
            type=disk.source_type,
            bus=bus,
            shareable=shareable,
            # Nova's backends fallocate local disks when asked to; volumes
            # are the storage's business.
            preallocated=connection_info is None and preallocation(conf) != "none",
        )
        facts = measure_disk(spec, disk.target_dev, probe, qemu_img)
        facts = facts.replace(driver="nova-volume" if connection_info else "nova-image")
    else:
        raise exception.InvalidDiskConfig(
            disk=disk.target_dev, reason=f"source type {disk.source_type!r} without a path"
        )
    if connection_info is None:
        return facts
    return facts.replace(
        is_volume=True,
        driver=volume_type,
        aio_hint=_hint(connection_info, conf),
        discard=requested_discard(connection_info.get("data") or {}),
    )


def _hint(connection_info: Mapping[str, Any], conf: cfg.ConfigOpts) -> str | None:
    """The AIO preference of the project's volume driver for this transport, if it has one."""
    name = connection_info.get("driver_volume_type")
    if not name or name not in loader.installed(loader.VOLUME_DRIVERS):
        return None
    driver = loader.volume_driver(name)(conf, StorageProbe())
    hint: str | None = driver.aio_hint(connection_info)
    return hint
