"""Assemble an instance's guest XML from its disks and their tuning.

The disks come from the image backend and the volume drivers
(:class:`~nova_disk_tuning.virt.libvirt.guestdisk.GuestDisk`), the
``<driver>`` settings from ``tuning.GuestTuning.apply_to_guest``; this module
only puts them together with the rest of a bootable domain: IOThreads, a
virtio-scsi controller when a disk is on the scsi bus, a serial console
written to a file in the instance directory, direct kernel boot when the
image has a kernel, and the domain type from ``[libvirt] virt_type``.

:func:`check_native_io` is the last check before any XML goes to libvirt:
it refuses ``io='native'`` without an O_DIRECT cache, whoever wrote the XML.
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree
from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.virt.libvirt import config
from nova_disk_tuning.virt.libvirt.guestdisk import GuestDisk
from nova_disk_tuning.virt.libvirt.tuning import DIRECT_CACHES, GuestTuning

_NATIVE_NEEDS = ", ".join(sorted(DIRECT_CACHES))


def build_guest(
    conf: cfg.ConfigOpts,
    *,
    name: str,
    uuid: str,
    vcpus: int,
    memory_mb: int,
    disks: Sequence[GuestDisk],
    tuning: GuestTuning,
    console_path: str,
    kernel: str | None = None,
    ramdisk: str | None = None,
    cmdline: str | None = None,
) -> config.LibvirtConfigGuest:
    """The tuned, validated guest config of one instance."""
    guest = config.LibvirtConfigGuest(
        virt_type=conf.libvirt.virt_type,
        name=name,
        uuid=uuid,
        memory=memory_mb * 1024,
        vcpus=vcpus,
        os_type="hvm",
        features=["acpi", "apic"],
        clock_offset="utc",
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="destroy",
    )
    if kernel:
        guest.os_kernel = kernel
        guest.os_initrd = ramdisk
        guest.os_cmdline = cmdline
    else:
        guest.os_boot_dev = ["hd"]
    for disk in disks:
        guest.add_device(disk.config)
    if any(disk.config.target_bus == "scsi" for disk in disks):
        guest.add_device(config.LibvirtConfigGuestController(type="scsi", model="virtio-scsi"))
    guest.add_device(
        config.LibvirtConfigGuestSerial(type="file", source_path=console_path, target_port=0)
    )
    tuning.apply_to_guest(guest)
    guest.validate()
    check_native_io(guest.to_xml())
    return guest


def check_native_io(xml: str) -> None:
    """Refuse a disk with ``io='native'`` and a cache that is not O_DIRECT.

    QEMU (>= 2.6) refuses to start such a guest ("aio=native was specified,
    but it requires cache.direct=on"), long after libvirt accepted the
    definition. The policy never produces it; this catches hand-edited
    ``libvirt.xml`` files and anything else that bypassed it. A disk
    without ``cache`` gets QEMU's default, writeback, so it is refused too.
    """
    try:
        root = etree.fromstring(xml.encode())
    except etree.XMLSyntaxError as exc:
        raise exception.InvalidConfig(reason=f"guest XML does not parse: {exc}") from None
    for disk in root.iterfind("devices/disk"):
        driver = disk.find("driver")
        if driver is None or driver.get("io") != "native":
            continue
        cache = driver.get("cache")
        if cache in DIRECT_CACHES:
            continue
        target = disk.find("target")
        name = target.get("dev") if target is not None else "<no target>"
        source = disk.find("source")
        where = ""
        if source is not None:
            where = f" ({source.get('file') or source.get('dev') or source.get('name')})"
        raise exception.InvalidDiskConfig(
            disk=f"{name}{where} of domain {root.findtext('name')}",
            reason=f"io='native' with cache={cache or 'unset (QEMU default writeback)'}: "
            f"native AIO needs an O_DIRECT cache ({_NATIVE_NEEDS}) and QEMU would refuse "
            "to start the guest. Set cache='none' (where O_DIRECT works at the disk) or "
            "io='threads' in the XML, or let the policy choose ([disk_tuning] aio_mode=auto).",
        )
