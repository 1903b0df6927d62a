"""Local volumes: a block device on this host (Cinder's ``local`` connector)."""

from __future__ import annotations

from nova_disk_tuning.virt.libvirt.volume.block import LibvirtBlockVolumeDriver


class LocalBlockVolumeDriver(LibvirtBlockVolumeDriver):
    transport = "local"
