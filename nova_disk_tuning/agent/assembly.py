"""An instance's guest: its disks as producers hand them over, and the XML assembled from them.

Image backends and volume drivers create or connect storage, describe it
with a :class:`LibvirtConfigGuestDisk` (source, target, format: no tuning)
and *measure* its :class:`DiskFacts` after creation: a :class:`GuestDisk`.
The compute driver passes the facts of all disks to the tuning policy, and
:func:`build_guest` puts the configs, the policy's decisions and the rest of
a bootable domain together: IOThreads, a virtio-scsi controller when a disk
is on the scsi bus, a serial console written to a file in the instance
directory, direct kernel boot when the image has a kernel, and the domain
type from ``[libvirt] virt_type``. Nobody else sets ``driver_cache``,
``driver_io`` and friends.

The last guard before libvirt refuses ``io='native'`` without an O_DIRECT
cache, whoever wrote the XML (the rule is :mod:`.tuning.safety`'s).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lxml import etree
from oslo_config import cfg

from nova_disk_tuning import domxml, exception
from nova_disk_tuning.policy import safety
from nova_disk_tuning.policy.decide import GuestTuning
from nova_disk_tuning.policy.facts import DiskFacts


@dataclass
class GuestDisk:
    config: domxml.LibvirtConfigGuestDisk
    facts: DiskFacts
    # Files or devices created for this disk, removed if the spawn fails
    # part-way (never the cached base image, never a volume).
    created: tuple[str, ...] = ()
    # What the backend did and why, for `explain` and the logs
    # (e.g. "fallocate(KEEP_SIZE) 10 GiB" or "ext2 cannot fallocate: sparse").
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.config.target_dev != self.facts.name:
            raise exception.InvalidDiskConfig(
                disk=self.facts.name,
                reason=f"facts name {self.facts.name!r} differs from the config's "
                f"target_dev {self.config.target_dev!r}; they must match for tuning",
            )


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
) -> domxml.LibvirtConfigGuest:
    """The tuned, validated guest config of one instance."""
    guest = domxml.LibvirtConfigGuest(
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
        guest.add_device(domxml.LibvirtConfigGuestController(type="scsi", model="virtio-scsi"))
    guest.add_device(
        domxml.LibvirtConfigGuestSerial(type="file", source_path=console_path, target_port=0)
    )
    tuning.apply_to_guest(guest)
    guest.validate()
    refuse_native_without_direct_cache(guest.devices, name)
    return guest


def refuse_native_without_direct_cache(devices: Iterable[object], domain: str | None) -> None:
    """Raise for the first disk whose ``io='native'`` QEMU would refuse to start."""
    for disk in devices:
        if not isinstance(disk, domxml.LibvirtConfigGuestDisk):
            continue
        if safety.native_without_direct_cache(disk.driver_io, disk.driver_cache) is None:
            continue
        where = disk.source_path or disk.source_name
        cache = disk.driver_cache or "unset (QEMU default writeback)"
        raise exception.InvalidDiskConfig(
            disk=f"{disk.target_dev}{f' ({where})' if where else ''} of domain {domain}",
            reason=f"io='native' with cache={cache}: native AIO needs an O_DIRECT cache "
            f"({', '.join(sorted(safety.DIRECT_CACHES))}) and QEMU would refuse to start the "
            "guest. Set cache='none' (where O_DIRECT works at the disk) or io='threads' in "
            "the XML, or let the policy choose ([disk_tuning] aio_mode=auto).",
        )


def check_native_io(xml: str) -> None:
    """:func:`refuse_native_without_direct_cache` for XML from a file or libvirt.

    Catches hand-edited ``libvirt.xml`` files and anything else that
    bypassed the policy. A disk without ``cache`` gets QEMU's default,
    writeback, so ``io='native'`` there is refused too.
    """
    try:
        root = etree.fromstring(xml.encode())
    except etree.XMLSyntaxError as exc:
        raise exception.InvalidConfig(reason=f"guest XML does not parse: {exc}") from None
    disks = []
    for element in root.iterfind("devices/disk"):
        disk = domxml.LibvirtConfigGuestDisk()
        disk.parse_dom(element)
        disks.append(disk)
    refuse_native_without_direct_cache(disks, root.findtext("name"))
