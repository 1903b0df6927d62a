"""iSCSI and iSER volumes: a SCSI disk that os-brick logged in to (``data.device_path``)."""

from __future__ import annotations

from nova_disk_tuning.virt.libvirt.volume.block import LibvirtBlockVolumeDriver


class ISCSIVolumeDriver(LibvirtBlockVolumeDriver):
    transport = "iscsi"


class ISERVolumeDriver(ISCSIVolumeDriver):
    """iSCSI over RDMA: the same block device on the host, another transport."""

    transport = "iser"
