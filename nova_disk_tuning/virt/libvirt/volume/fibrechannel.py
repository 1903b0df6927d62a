"""Fibre Channel volumes: the multipath or SCSI device os-brick found (``data.device_path``)."""

from __future__ import annotations

from nova_disk_tuning.virt.libvirt.volume.block import LibvirtBlockVolumeDriver


class FibreChannelVolumeDriver(LibvirtBlockVolumeDriver):
    transport = "fibre_channel"
