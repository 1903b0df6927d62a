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
from collections.abc import Mapping
from typing import Any

from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent.volume.base import Attachment, LibvirtBaseVolumeDriver
from nova_disk_tuning.policy.facts import DiskFacts

LOG = logging.getLogger(__name__)


class LibvirtFileSystemVolumeDriver(LibvirtBaseVolumeDriver):
    """A volume that is a file on a mounted share: ``<disk type='file'>``."""

    # The [libvirt] option holding the mount base.
    mount_base_option = ""

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

    def _check_source(self, volume: Attachment, path: str) -> None:
        try:
            found = self.probe.source_type(path)
        except exception.DiskNotFound:
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
        except exception.InvalidDiskConfig:
            found = "neither"
        except OSError as exc:
            raise self.error(volume.info, f"cannot stat {path}: {exc.strerror}") from None
        if found != "file":
            raise self.error(
                volume.info,
                f"{path} is not a regular file; the {self.transport} transport gives files "
                "on a share to the guest",
            )

    def _notes(self, volume: Attachment, facts: DiskFacts) -> list[str]:
        assert facts.path is not None  # measured from a path
        covered = facts.allocation_covers_size
        return [
            f"file {facts.path} on {self.probe.fs_type(facts.path)}",
            f"{facts.allocated} of {facts.size} bytes allocated "
            f"({'full' if covered else 'sparse'})",
            f"O_DIRECT {'works' if facts.direct_io else 'does not work'} there",
        ]


class NFSVolumeDriver(LibvirtFileSystemVolumeDriver):
    transport = "nfs"
    mount_base_option = "nfs_mount_point_base"


class QuobyteVolumeDriver(LibvirtFileSystemVolumeDriver):
    """Quobyte's FUSE client; the Nova spec reports native AIO helping here."""

    transport = "quobyte"
    mount_base_option = "quobyte_mount_point_base"

    @staticmethod
    def normalize_export(export: str) -> str:
        # Cinder sends quobyte://host/volume; Nova hashes it without the scheme.
        return export.removeprefix("quobyte://")
