"""StorPool volumes: the StorPool block device attached to this host (``data.device_path``)."""

from __future__ import annotations

from nova_disk_tuning.virt.libvirt.volume.block import LibvirtBlockVolumeDriver


class StorPoolVolumeDriver(LibvirtBlockVolumeDriver):
    transport = "storpool"
