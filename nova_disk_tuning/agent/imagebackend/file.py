"""Disks as files in the instance directory: flat (raw) and qcow2 overlays.

The contract is :class:`~nova_disk_tuning.agent.imagebackend.base.ImageBackend`'s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.agent.imagebackend.base import (
    DiskRef,
    DiskRequest,
    ImageBackend,
)
from nova_disk_tuning.common.files import remove_if_exists
from nova_disk_tuning.conf import preallocation
from nova_disk_tuning.domxml import LibvirtConfigGuestDisk
from nova_disk_tuning.images.cache import CachedImage
from nova_disk_tuning.policy.measure import measure_local
from nova_disk_tuning.storage.preallocate import preallocate

LOG = logging.getLogger(__name__)


class _FileBackend(ImageBackend):
    """Disks as files in the instance directory."""

    def destroy(self, disks: Iterable[DiskRef]) -> list[str]:
        removed = []
        base_dir = os.path.realpath(
            os.path.join(self.conf.instances_path, self.conf.image_cache.subdirectory_name)
        )
        instances = os.path.realpath(self.conf.instances_path)
        for path in _paths(disks):
            real = os.path.realpath(path)
            if real.startswith(base_dir + os.sep):
                # A caller handing over the base would break every instance using it.
                LOG.error("Not removing %s: it is in the image cache %s", path, base_dir)
                continue
            if not real.startswith(instances + os.sep):
                # Only what this backend makes: files in instance directories.
                # A record edited or restored elsewhere must not delete others' files.
                LOG.error("Not removing %s: it is not under instances_path %s", path, instances)
                continue
            if remove_if_exists(path):
                LOG.info("Removed instance disk %s", path)
                removed.append(path)
            else:
                LOG.debug("Instance disk %s was already gone", path)
        return removed

    def _names(self, disk: DiskRequest) -> tuple[str, ...]:
        path = os.path.join(disk.instance_dir, disk.name)
        _refuse_existing(path)
        return (path,)

    @contextlib.contextmanager
    def _creating(self, instance_dir: str, name: str) -> Iterator[str]:
        """Yield the new disk's path; remove the disk (and a directory made here) on failure."""
        made_dir = not os.path.isdir(instance_dir)
        os.makedirs(instance_dir, exist_ok=True)
        path = os.path.join(instance_dir, name)
        _refuse_existing(path)
        try:
            yield path
        except BaseException:
            if remove_if_exists(path):
                LOG.info("Removed the incomplete disk %s", path)
            if made_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(instance_dir)
            raise

    def _preallocate(self, path: str, size: int, keep_size: bool, notes: list[str]) -> None:
        """fallocate per preallocate_images, noting how it went (the facts say what it left)."""
        mode = preallocation(self.conf)
        if mode == "none":
            notes.append("preallocate_images=none: left sparse")
            return
        result = preallocate(path, size, keep_size=keep_size, probe=self.probe)
        notes.append(f"preallocate_images={mode}: {result.method} ({result.reason})")

    def _guest_disk(
        self, target_dev: str, path: str, fmt: str, bus: str, notes: list[str]
    ) -> GuestDisk:
        facts = measure_local(
            path,
            name=target_dev,
            probe=self.probe,
            qemu_img=self.qemu_img,
            format=fmt,
            source_type="file",
            bus=bus,
            driver=self.name,
        )
        if preallocation(self.conf) != "none" and not facts.preallocated:
            LOG.warning(
                "%s: preallocate_images=%s, but %s of its %s bytes are allocated: sparse",
                path,
                preallocation(self.conf),
                facts.allocated,
                facts.size,
            )
        config = LibvirtConfigGuestDisk(
            source_type="file",
            source_path=path,
            driver_name="qemu",
            driver_format=fmt,
            target_dev=target_dev,
            target_bus=bus,
        )
        LOG.info("Created %s disk %s for %s: %s", fmt, path, target_dev, "; ".join(notes))
        return GuestDisk(config=config, facts=facts, created=(path,), notes=tuple(notes))


class Flat(_FileBackend):
    """Raw files: a sparse copy of the base, grown to the flavor size, then fallocated."""

    name = "flat"

    def _make_root(self, disk: DiskRequest, base: CachedImage) -> GuestDisk:
        notes: list[str] = []
        with self._creating(disk.instance_dir, disk.name) as path:
            # qemu-img convert rather than cp: it reads qcow2 bases too, keeps
            # holes (-S 4k), writes with -t none/-W and flushes once.
            result = self.qemu_img.convert(
                base.path, path, base.format, "raw", preallocation="none"
            )
            notes.append(f"copied {base.format} base {base.path} with {' '.join(result.command)}")
            if disk.size > base.virtual_size:
                self.qemu_img.resize(path, disk.size, "raw")
                notes.append(f"grown from {base.virtual_size} to {disk.size} bytes")
            self._preallocate(path, disk.size, False, notes)
            return self._guest_disk(disk.target_dev, path, "raw", disk.bus, notes)

    def _make_blank(self, disk: DiskRequest) -> GuestDisk:
        notes: list[str] = []
        with self._creating(disk.instance_dir, disk.name) as path:
            with open(path, "xb") as handle:
                handle.truncate(disk.size)
            # Format before fallocate: mkfs may discard (punch holes in) a
            # file, which would undo the preallocation.
            note = self._format(path, disk.kind, disk.fs_format, disk.index)
            notes.append(note or "unformatted")
            self._preallocate(path, disk.size, False, notes)
            return self._guest_disk(disk.target_dev, path, "raw", disk.bus, notes)


class Qcow2(_FileBackend):
    """qcow2 overlays on the cached base; ``performance`` uses extended L2 + falloc."""

    name = "qcow2"

    def _make_root(self, disk: DiskRequest, base: CachedImage) -> GuestDisk:
        notes = [f"overlay on {base.path} ({base.format})"]
        with self._creating(disk.instance_dir, disk.name) as path:
            self._make(path, disk.size, notes, base)
            return self._guest_disk(disk.target_dev, path, "qcow2", disk.bus, notes)

    def _make_blank(self, disk: DiskRequest) -> GuestDisk:
        if disk.fs_format is not None:
            LOG.info(
                "%s disk %s: qcow2 is not formatted on the host; the guest formats it",
                disk.kind,
                disk.target_dev,
            )
        notes = [f"standalone qcow2 {disk.kind} disk, unformatted"]
        with self._creating(disk.instance_dir, disk.name) as path:
            self._make(path, disk.size, notes)
            return self._guest_disk(disk.target_dev, path, "qcow2", disk.bus, notes)

    def _make(
        self, path: str, size: int, notes: list[str], base: CachedImage | None = None
    ) -> None:
        """Create the qcow2 as preallocate_images says (qemu-img create decides the fallback)."""
        mode = preallocation(self.conf)
        backing = {"backing": base.path, "backing_format": base.format} if base else {}
        result = self.qemu_img.create(path, "qcow2", size, preallocation=mode, **backing)
        notes.append(f"preallocate_images={mode}: {result.preallocation} ({result.reason})")


def _refuse_existing(path: str) -> None:
    if os.path.lexists(path):
        raise exception.StorageError(
            operation="create disk",
            path=path,
            reason="it already exists; destroy the instance's disks first",
        )


def _paths(disks: Iterable[DiskRef]) -> Iterator[str]:
    for disk in disks:
        if isinstance(disk, str):
            yield disk
        elif isinstance(disk, GuestDisk):
            yield from disk.created
        elif disk.source_path:
            yield disk.source_path
