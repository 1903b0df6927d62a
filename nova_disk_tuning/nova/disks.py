"""Facts about the disks of a guest config Nova built, measured on this host.

Nova has created every local disk before it builds the guest config (spawn,
hard reboot, resize) and has connected every volume, so each disk is
measured as every disk is (:mod:`nova_disk_tuning.policy.measure`), and a
volume carries its transport's AIO hint
(:mod:`nova_disk_tuning.policy.transports`).

A disk that cannot be measured (a path that is gone, a probe error) is left
out: the caller keeps Nova's own settings for it and logs why. Tuning must
never fail a boot that Nova alone would have completed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.policy import transports
from nova_disk_tuning.policy.facts import DiskFacts
from nova_disk_tuning.policy.measure import as_volume, measure_local, measure_network
from nova_disk_tuning.storage.probe import StorageProbe

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
            facts.append(_measure_one(disk, volumes.get(target), probe, qemu_img))
        except (exception.NovaDiskTuningException, OSError, ValueError) as exc:
            skipped.append(Skipped(target, str(exc)))
    return facts, skipped


def _measure_one(
    disk: Any,
    connection_info: Mapping[str, Any] | None,
    probe: StorageProbe,
    qemu_img: QemuImg,
) -> DiskFacts:
    bus = disk.target_bus or "virtio"
    shareable = bool(getattr(disk, "shareable", False))
    volume_type = (connection_info or {}).get("driver_volume_type")
    if disk.source_type == "network":
        facts = measure_network(
            disk.target_dev,
            format=disk.driver_format or "raw",
            bus=bus,
            shareable=shareable,
            driver=volume_type or "network",
        )
    elif disk.source_type in ("file", "block") and disk.source_path:
        facts = measure_local(
            disk.source_path,
            name=disk.target_dev,
            probe=probe,
            qemu_img=qemu_img,
            format=disk.driver_format,
            source_type=disk.source_type,
            bus=bus,
            shareable=shareable,
            driver="nova-volume" if connection_info else "nova-image",
        )
    else:
        raise exception.InvalidDiskConfig(
            disk=disk.target_dev, reason=f"source type {disk.source_type!r} without a path"
        )
    if connection_info is None:
        return facts
    return as_volume(facts, connection_info, transports.aio_hint(volume_type))
