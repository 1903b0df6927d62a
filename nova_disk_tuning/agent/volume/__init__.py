"""Volume drivers by kind of transport (block devices, files on a share, QEMU's network clients).

Each is loaded by ``connection_info['driver_volume_type']`` (entry points
``nova_disk_tuning.volume_drivers``).
"""
