"""Volumes that are files on a shared file system mounted on the host (NFS, Quobyte).

The share ``data.export`` is mounted at ``<mount base>/<md5 of the export>``
(Nova's layout) and the volume is the file ``data.name`` in it; once Nova
has connected the volume, ``data.device_path`` names the file directly and
wins. Whether native AIO is safe depends on the file's *measured*
allocation: the drivers prefer native, and the policy falls back to threads
for a sparse file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.storage.probe import StorageProbe
from nova_disk_tuning.virt.libvirt.volume.base import Attachment, LibvirtBaseVolumeDriver

LOG = logging.getLogger(__name__)


class LibvirtFileSystemVolumeDriver(LibvirtBaseVolumeDriver):
    """A volume that is a file on a mounted share: ``<disk type='file'>``."""

    preferred_aio = "native"
    # The [libvirt] option holding the mount base.
    mount_base_option = ""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        probe: StorageProbe | None = None,
        qemu_img: QemuImg | None = None,
    ) -> None:
        super().__init__(conf, probe)
        # Only qcow2 volumes need qemu-img (their virtual size); made lazily.
        self._qemu_img = qemu_img

    def mount_point(self, export: str) -> str:
        """Where the share ``export`` is mounted (Nova's md5-of-export layout)."""
        base = getattr(self.conf.libvirt, self.mount_base_option)
        normalized = self.normalize_export(export)
        # A directory name, not security: md5 because Nova's mounts use it.
        digest = hashlib.md5(normalized.encode(), usedforsecurity=False).hexdigest()
        return os.path.join(base, digest)

    @staticmethod
    def normalize_export(export: str) -> str:
        return export

    def volume_path(self, connection_info: Mapping[str, Any]) -> str:
        data = self.data(connection_info)
        if data.get("device_path"):
            return str(data["device_path"])
        export = self.require(connection_info, "export")
        name = self.require(connection_info, "name")
        if os.path.isabs(name) or ".." in name.split("/"):
            raise self.invalid(
                connection_info, f"data.name {name!r} must be a file name inside the share"
            )
        return os.path.join(self.mount_point(export), name)

    def _source(self, volume: Attachment) -> None:
        volume.config.source_type = "file"
        volume.config.source_path = self.volume_path(volume.info)
        volume.config.driver_format = volume.data.get("format") or "raw"

    def _measure(self, volume: Attachment) -> tuple[dict[str, Any], list[str]]:
        path = self._source_path(volume)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            where = (
                "data.device_path"
                if volume.data.get("device_path")
                else f"data.name in the share {volume.data.get('export')!r} mounted at "
                f"{os.path.dirname(path)} ([libvirt] {self.mount_base_option})"
            )
            raise self.error(
                volume.info,
                f"volume file {path} ({where}) does not exist; mount the share there or "
                "check the volume's name",
            ) from None
        except OSError as exc:
            raise self.error(volume.info, f"cannot stat {path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise self.error(
                volume.info,
                f"{path} is not a regular file; the {self.transport} transport gives files "
                "on a share to the guest",
            )
        allocation = self.probe.allocation(path)
        size, allocated = allocation.size, allocation.allocated
        fully: bool | None = allocation.fully_allocated
        if volume.config.driver_format == "qcow2":
            # st_size of a qcow2 is not its virtual size; a qcow2 will not
            # allocate on write once its host allocation reaches the virtual
            # size (the rule KubeVirt uses), so let DiskFacts derive it.
            size, fully = self._virtual_size(volume.info, path), None
        direct_io = self.probe.supports_direct_io(path)
        fs_type = self.probe.fs_type(path)
        covered = fully if fully is not None else allocated >= size
        notes = [
            f"file {path} on {fs_type}",
            f"{allocated} of {size} bytes allocated ({'full' if covered else 'sparse'})",
            f"O_DIRECT {'works' if direct_io else 'does not work'} there",
        ]
        return {
            "path": path,
            "size": size,
            "allocated": allocated,
            "fully_allocated": fully,
            "direct_io": direct_io,
        }, notes

    def _virtual_size(self, connection_info: Mapping[str, Any], path: str) -> int:
        if self._qemu_img is None:
            self._qemu_img = QemuImg(self.conf, probe=self.probe)
        try:
            return int(self._qemu_img.info(path, format="qcow2").virtual_size)
        except exception.ImageError as exc:
            raise self.error(
                connection_info, f"cannot read the qcow2 virtual size of {path}: {exc}"
            ) from None


class NFSVolumeDriver(LibvirtFileSystemVolumeDriver):
    transport = "nfs"
    storage_kind = "nfs"
    mount_base_option = "nfs_mount_point_base"


class QuobyteVolumeDriver(LibvirtFileSystemVolumeDriver):
    """Quobyte's FUSE client; the Nova spec reports native AIO helping here."""

    transport = "quobyte"
    storage_kind = "quobyte"
    mount_base_option = "quobyte_mount_point_base"

    @staticmethod
    def normalize_export(export: str) -> str:
        # Cinder sends quobyte://host/volume; Nova hashes it without the scheme.
        return export.removeprefix("quobyte://")
