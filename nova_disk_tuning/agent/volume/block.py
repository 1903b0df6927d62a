"""Volumes that os-brick attaches as a host block device (``data.device_path``).

iSCSI, iSER, Fibre Channel, NVMe-oF, ScaleIO/PowerFlex, StorPool and local
volumes all end up as a block device node on the host; QEMU opens it like
any block device, so they share one driver and differ only in the
transport's name (and its entry in :mod:`nova_disk_tuning.policy.transports`).
"""

from __future__ import annotations

from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent.volume.base import Attachment, LibvirtBaseVolumeDriver
from nova_disk_tuning.policy.facts import DiskFacts

LOG = logging.getLogger(__name__)


class LibvirtBlockVolumeDriver(LibvirtBaseVolumeDriver):
    """A volume connected as a host block device, given to the guest as ``<disk type='block'>``."""

    def _source(self, volume: Attachment) -> None:
        volume.config.source_type = "block"
        volume.config.source_path = self.require(
            volume.info,
            "device_path",
            "os-brick's connect_volume returns it: connect the volume on this host first",
        )
        volume.config.driver_format = volume.data.get("format") or "raw"

    def _check_source(self, volume: Attachment, path: str) -> None:
        try:
            found = self.probe.source_type(path)
        except exception.DiskNotFound:
            raise self.error(
                volume.info,
                f"data.device_path {path} does not exist; os-brick's connect_volume has "
                "not attached it (or it was detached). Reconnect the volume and retry.",
            ) from None
        except exception.InvalidDiskConfig:
            found = "neither"
        except OSError as exc:
            raise self.error(
                volume.info, f"cannot stat data.device_path {path}: {exc.strerror}"
            ) from None
        if found != "block":
            raise self.error(
                volume.info,
                f"data.device_path {path} is not a block device; the {self.transport} "
                "transport attaches block devices. A file volume needs a file "
                "transport such as nfs.",
            )

    def _notes(self, volume: Attachment, facts: DiskFacts) -> list[str]:
        notes = [
            f"block device {facts.path} ({facts.size} bytes)",
            f"O_DIRECT {'works' if facts.direct_io else 'does not work'} on it",
            # A thin LUN allocates on the array, not in a host file system:
            # QEMU's I/O thread never waits on host metadata, so the device
            # counts as allocated for the AIO choice.
            "fully allocated as far as the host can tell (a thin LUN allocates on the array)",
        ]
        if facts.storage_kind is not None:
            notes.append(f"storage kind {facts.storage_kind}")
        return notes


class ISCSIVolumeDriver(LibvirtBlockVolumeDriver):
    """iSCSI: a SCSI disk that os-brick logged in to."""

    transport = "iscsi"


class ISERVolumeDriver(ISCSIVolumeDriver):
    """iSCSI over RDMA: the same block device on the host, another transport."""

    transport = "iser"


class FibreChannelVolumeDriver(LibvirtBlockVolumeDriver):
    """Fibre Channel: the multipath or SCSI device os-brick found."""

    transport = "fibre_channel"


class NVMeOFVolumeDriver(LibvirtBlockVolumeDriver):
    """NVMe over Fabrics: the namespace os-brick connected."""

    transport = "nvmeof"


class LocalBlockVolumeDriver(LibvirtBlockVolumeDriver):
    """A block device on this host (Cinder's ``local`` connector)."""

    transport = "local"


class ScaleIOVolumeDriver(LibvirtBlockVolumeDriver):
    """ScaleIO (Dell PowerFlex): the SDC block device."""

    transport = "scaleio"


class StorPoolVolumeDriver(LibvirtBlockVolumeDriver):
    """StorPool: the StorPool block device attached to this host."""

    transport = "storpool"
