"""The ``lvm`` image backend: thick logical volumes in ``[libvirt] images_volume_group``.

Volumes are made and removed with ``lvcreate``/``lvremove`` through the
injectable runner; the root disk gets the base written into the volume by
``qemu-img convert -O raw``. On delete the volume is wiped first, as
``[libvirt] volume_clear`` says: ``zero`` with the fast-zero chain on the
device (fallocate ZERO_RANGE, then BLKZEROOUT: the device zeroes in place,
often without moving data), ``shred`` with ``shred -n3``, both limited to
the first ``volume_clear_size`` MiB when that is not 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.agent.imagebackend.base import (
    DiskRef,
    DiskRequest,
    ImageBackend,
)
from nova_disk_tuning.domxml import LibvirtConfigGuestDisk
from nova_disk_tuning.images.cache import CachedImage
from nova_disk_tuning.policy.measure import measure_local
from nova_disk_tuning.storage.wipe import wipe_length, zero_volume

LOG = logging.getLogger(__name__)
_HINT = "check the volume group with vgs/lvs"


class Lvm(ImageBackend):
    name = "lvm"
    required_commands = (("lvcreate", "lvm2"), ("lvremove", "lvm2"))

    def __init__(
        self, conf: cfg.ConfigOpts, *args: Any, dev_dir: str = "/dev", **kwargs: Any
    ) -> None:
        """As :class:`ImageBackend`, plus ``dev_dir``."""
        super().__init__(conf, *args, **kwargs)
        # Where LVM puts /dev/<vg>/<lv> links; a test points it elsewhere.
        self.dev_dir = dev_dir

    @property
    def volume_group(self) -> str:
        group: str | None = self.conf.libvirt.images_volume_group
        if not group:
            raise exception.InvalidConfig(
                reason="[libvirt] images_type=lvm needs [libvirt] images_volume_group: "
                "set it to the LVM volume group that holds instance disks"
            )
        return group

    def volume_name(self, instance_dir: str, name: str) -> str:
        return f"{os.path.basename(os.path.normpath(instance_dir))}_{name}"

    def volume_path(self, volume: str) -> str:
        return os.path.join(self.dev_dir, self.volume_group, volume)

    # Creation -----------------------------------------------------------------

    def _names(self, disk: DiskRequest) -> tuple[str, ...]:
        volume = self.volume_name(disk.instance_dir, disk.name)
        path = self.volume_path(volume)
        if os.path.lexists(path):
            # Another instance's (or a leftover): announcing it would have
            # destroy wipe it.
            raise exception.StorageError(
                operation="lvcreate",
                path=f"{self.volume_group}/{volume}",
                reason=f"a logical volume of that name exists already; {_HINT}",
            )
        return (path,)

    def _make_root(self, disk: DiskRequest, base: CachedImage) -> GuestDisk:
        volume = self.volume_name(disk.instance_dir, disk.name)
        path = self._lvcreate(volume, disk.size)
        try:
            result = self.qemu_img.convert(base.path, path, base.format, "raw")
        except BaseException:
            self._lvremove(volume)
            raise
        note = f"thick volume of {disk.size} bytes; base written with {' '.join(result.command)}"
        return self._guest_disk(disk.target_dev, path, disk.bus, [note])

    def _make_blank(self, disk: DiskRequest) -> GuestDisk:
        volume = self.volume_name(disk.instance_dir, disk.name)
        path = self._lvcreate(volume, disk.size)
        try:
            note = self._format(path, disk.kind, disk.fs_format, disk.index) or "unformatted"
        except BaseException:
            self._lvremove(volume)
            raise
        return self._guest_disk(
            disk.target_dev, path, disk.bus, [f"thick {disk.kind} volume, {note}"]
        )

    def _lvcreate(self, volume: str, size: int) -> str:
        group = self.volume_group
        # Thick: every extent is reserved now, so the guest never hits a full
        # pool and nothing allocates on write (what native AIO wants).
        argv = ["lvcreate", "--yes", "-L", f"{size}b", "-n", volume, group]
        self._run("lvcreate", f"{group}/{volume}", argv, f"{_HINT} (is there {size} bytes free?)")
        LOG.info("Created logical volume %s/%s (%d bytes)", group, volume, size)
        return self.volume_path(volume)

    def _guest_disk(self, target_dev: str, path: str, bus: str, notes: list[str]) -> GuestDisk:
        measured = measure_local(
            path,
            name=target_dev,
            probe=self.probe,
            qemu_img=self.qemu_img,
            format="raw",
            source_type="block",
            bus=bus,
            driver=self.name,
        )
        # What this backend knows of its own volumes: LVM (whatever the
        # device-mapper table says), and Nova's choice for non-sparse LVM
        # as the AIO hint; the policy still checks the cache.
        facts = measured.replace(aio_hint="native", storage_kind="lvm")
        config = LibvirtConfigGuestDisk(
            source_type="block",
            source_path=path,
            driver_name="qemu",
            driver_format="raw",
            target_dev=target_dev,
            target_bus=bus,
        )
        LOG.info("Logical volume %s is %s: %s", path, target_dev, "; ".join(notes))
        return GuestDisk(config=config, facts=facts, created=(path,), notes=tuple(notes))

    # Removal ------------------------------------------------------------------

    def destroy(self, disks: Iterable[DiskRef]) -> list[str]:
        removed = []
        for path in self._paths(disks):
            volume = self._volume_of(path)
            if not os.path.exists(path):
                LOG.info("Logical volume %s is already gone", path)
                continue
            self.wipe(path)
            self._lvremove(volume)
            removed.append(path)
        return removed

    def wipe(self, path: str) -> str:
        """Wipe a volume as volume_clear says; returns the method used."""
        mode = self.conf.libvirt.volume_clear
        if mode == "none":
            LOG.info("Not wiping %s: [libvirt] volume_clear=none", path)
            return "none"
        clear_size = self.conf.libvirt.volume_clear_size
        if mode == "shred":
            length = wipe_length(self.probe.allocation(path).size, clear_size)
            argv = ["shred", "-n3", "-s", str(length), path]
            self._run("wipe", path, argv, "check that coreutils is installed")
            LOG.info("Wiped %d bytes of %s with shred -n3", length, path)
            return "shred"
        result = zero_volume(path, clear_size, self.zeroer, self.probe)
        LOG.info(
            "Wiped %d bytes of %s with %s in %.2f s",
            result.bytes,
            path,
            result.method,
            result.seconds,
        )
        return result.method

    def _lvremove(self, volume: str) -> None:
        group = self.volume_group
        self._run("lvremove", f"{group}/{volume}", ["lvremove", "-f", f"{group}/{volume}"], _HINT)
        LOG.info("Removed logical volume %s/%s", group, volume)

    def _paths(self, disks: Iterable[DiskRef]) -> list[str]:
        paths = []
        for disk in disks:
            if isinstance(disk, str):
                paths.append(disk)
            elif isinstance(disk, GuestDisk):
                paths.extend(disk.created)
            elif disk.source_path:
                paths.append(disk.source_path)
        return paths

    def _volume_of(self, path: str) -> str:
        group_dir = os.path.join(self.dev_dir, self.volume_group)
        if os.path.dirname(os.path.normpath(path)) != group_dir:
            # Never wipe a device that is not one of our volumes.
            raise exception.StorageError(
                operation="destroy",
                path=path,
                reason=f"not a logical volume of {group_dir}; only volumes this backend "
                "created are removed",
            )
        return os.path.basename(path)
