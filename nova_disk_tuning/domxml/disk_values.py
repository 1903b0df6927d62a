"""The values a ``<disk>`` may take, as libvirt's schema (domaincommon.rng) allows them."""

from __future__ import annotations

from typing import Any

from nova_disk_tuning.domxml import base

DISK_IO_MODES = ("threads", "native", "io_uring")
DISK_CACHE_MODES = ("default", "none", "writethrough", "writeback", "directsync", "unsafe")
DISK_DISCARD_MODES = ("ignore", "unmap")
DISK_DETECT_ZEROES = ("off", "on", "unmap")
DISK_ERROR_POLICIES = ("stop", "report", "ignore", "enospace")
DISK_RERROR_POLICIES = ("stop", "report", "ignore")
DISK_BUSES = ("virtio", "scsi", "sata", "ide", "usb", "fdc", "sd", "xen")
DISK_SOURCE_TYPES = ("file", "block", "network")
DISK_DEVICES = ("disk", "cdrom", "lun", "floppy")
# libvirt's storage format names (storagecommon.rng).
DISK_FORMATS = (
    "raw", "qcow2", "qcow", "qed", "vmdk", "vpc", "vdi", "vhd",
    "bochs", "cloop", "dmg", "iso", "fat", "ploop", "luks",
)  # fmt: skip
NETWORK_PROTOCOLS = (
    "rbd", "iscsi", "nbd", "gluster", "sheepdog", "http", "https",
    "ftp", "ftps", "tftp", "vxhs", "nfs",
)  # fmt: skip
# How many <host> elements each protocol takes (domaincommon.rng): (min, max).
HOSTS_PER_PROTOCOL = {"rbd": (0, None), "gluster": (1, None)}

# <iotune> children in libvirt's order; the Python name is "disk_" + tag.
IOTUNE_BASE = (
    "total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
    "total_iops_sec", "read_iops_sec", "write_iops_sec",
)  # fmt: skip
IOTUNE_ELEMENTS = (
    *IOTUNE_BASE,
    *(f"{n}_max" for n in IOTUNE_BASE),
    "size_iops_sec",
    *(f"{n}_max_length" for n in IOTUNE_BASE),
)

# Python attribute -> <driver> attribute, in libvirt's output order.
DRIVER_ATTRS = {
    "driver_name": "name",
    "driver_format": "type",
    "driver_cache": "cache",
    "driver_error_policy": "error_policy",
    "driver_rerror_policy": "rerror_policy",
    "driver_io": "io",
    "driver_copy_on_read": "copy_on_read",
    "driver_discard": "discard",
    "driver_iothread": "iothread",
    "driver_detect_zeroes": "detect_zeroes",
    "driver_queues": "queues",
    "driver_queue_size": "queue_size",
    "driver_discard_no_unref": "discard_no_unref",
}
INT_DRIVER_ATTRS = {"driver_iothread", "driver_queues", "driver_queue_size"}


class PortList(base.ListOf):
    """Ports per host; all-None is stored as [] (the XML cannot tell them apart).

    Nova's connection_info carries ports as strings; decimal strings are
    stored as ints so objects built either way compare equal.
    """

    def __call__(self, name: str, value: Any) -> list[Any]:
        if isinstance(value, (list, tuple)):
            value = [int(p) if isinstance(p, str) and p.isdecimal() else p for p in value]
        ports = super().__call__(name, value)
        return [] if all(p is None for p in ports) else ports
