"""NVMe over Fabrics volumes: the namespace os-brick connected (``data.device_path``)."""

from __future__ import annotations

from nova_disk_tuning.virt.libvirt.volume.block import LibvirtBlockVolumeDriver


class NVMeOFVolumeDriver(LibvirtBlockVolumeDriver):
    transport = "nvmeof"
