"""ScaleIO (Dell PowerFlex) volumes: the SDC block device (``data.device_path``)."""

from __future__ import annotations

from nova_disk_tuning.virt.libvirt.volume.block import LibvirtBlockVolumeDriver


class ScaleIOVolumeDriver(LibvirtBlockVolumeDriver):
    transport = "scaleio"
