"""Volumes that os-brick attaches as a host block device (``data.device_path``).

iSCSI, iSER, Fibre Channel, NVMe-oF, ScaleIO/PowerFlex, StorPool and local
volumes all end up as a block device node on the host; QEMU opens it like
any block device, so they share one driver and differ only in name.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from oslo_log import log as logging

from nova_disk_tuning.virt.libvirt.volume.base import Attachment, LibvirtBaseVolumeDriver

LOG = logging.getLogger(__name__)


class LibvirtBlockVolumeDriver(LibvirtBaseVolumeDriver):
    """A volume connected as a host block device, given to the guest as ``<disk type='block'>``."""

    # Writes to a block device never wait for a host file system to
    # allocate blocks, which is what makes native AIO safe (the Nova spec).
    preferred_aio = "native"

    def _source(self, volume: Attachment) -> None:
        volume.config.source_type = "block"
        volume.config.source_path = self.require(
            volume.info,
            "device_path",
            "os-brick's connect_volume returns it: connect the volume on this host first",
        )
        volume.config.driver_format = volume.data.get("format") or "raw"

    def _measure(self, volume: Attachment) -> tuple[dict[str, Any], list[str]]:
        path = self._source_path(volume)
        try:
            st = self._stat(path)
        except FileNotFoundError:
            raise self.error(
                volume.info,
                f"data.device_path {path} does not exist; os-brick's connect_volume has "
                "not attached it (or it was detached). Reconnect the volume and retry.",
            ) from None
        except OSError as exc:
            raise self.error(
                volume.info, f"cannot stat data.device_path {path}: {exc.strerror}"
            ) from None
        if not stat.S_ISBLK(st.st_mode):
            raise self.error(
                volume.info,
                f"data.device_path {path} is not a block device; the {self.transport} "
                "transport attaches block devices. A file volume needs a file "
                "transport such as nfs.",
            )
        allocation = self.probe.allocation(path)
        direct_io = self.probe.supports_direct_io(path)
        kind = self.probe.storage_kind(path)
        notes = [
            f"block device {path} ({allocation.size} bytes)",
            f"O_DIRECT {'works' if direct_io else 'does not work'} on it",
            # A thin LUN allocates on the array, not in a host file system:
            # QEMU's I/O thread never waits on host metadata, so the device
            # counts as allocated for the AIO choice.
            "fully allocated as far as the host can tell (a thin LUN allocates on the array)",
        ]
        if kind is not None:
            notes.append(f"storage kind {kind}")
        measured = {
            "path": path,
            "size": allocation.size,
            "allocated": allocation.allocated,
            "fully_allocated": True,
            "direct_io": direct_io,
        }
        if kind is not None:
            measured["storage_kind"] = kind
        return measured, notes

    @staticmethod
    def _stat(path: str) -> os.stat_result:
        # A method, so unit tests can stand in a block device without root.
        return os.stat(path)
