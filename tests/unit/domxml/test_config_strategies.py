"""Hypothesis strategies and an XML comparison for the libvirt config tests.

Shared by the unit round-trip tests and the functional schema tests.  Every
object drawn here is valid by construction, so ``format_dom()`` never raises
on it; the ``libvirt_9_0`` flag leaves out what libvirt 9.0's schema does not
know yet (per-queue IOThread mapping, ``discard_no_unref``).
"""

from __future__ import annotations

import string

from hypothesis import strategies as st
from lxml import etree

from nova_disk_tuning import domxml as config

# -- comparing XML ----------------------------------------------------------------


def _canon(element: etree._Element) -> tuple:
    """Tag, attributes (order ignored), text and children (order kept)."""
    children = [c for c in element if isinstance(c.tag, str)]
    text = element.text
    if children and text is not None and not text.strip():
        text = None  # indentation, not content
    return (element.tag, dict(element.attrib), text, [_canon(c) for c in children])


def assert_xml_equal(expected: str | etree._Element, actual: str | etree._Element) -> None:
    parser = etree.XMLParser(remove_blank_text=True)
    if isinstance(expected, str):
        expected = etree.fromstring(expected.strip(), parser)
    if isinstance(actual, str):
        actual = etree.fromstring(actual.strip(), parser)
    assert _canon(expected) == _canon(actual), (
        "XML differs:\n--- expected\n"
        + etree.tostring(expected, pretty_print=True, encoding="unicode")
        + "--- actual\n"
        + etree.tostring(actual, pretty_print=True, encoding="unicode")
    )


# -- strings ------------------------------------------------------------------------

# Characters XML escapes or that are easy to mishandle.
_SPECIAL = "&<>\"' \t\u00e9\u00fc\u4e2d\U0001f600"

# Any string XML 1.0 can carry (no control characters, no surrogates).
xml_text = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_categories=("Cs", "Cc"),
        exclude_characters="\ufffe\uffff",
    )
    | st.sampled_from(_SPECIAL),
    min_size=1,
    max_size=20,
)
# What libvirt's schema accepts in a path: anything but newlines, absolute.
abs_path = st.builds(
    lambda parts: "/" + "/".join(parts), st.lists(xml_text, min_size=1, max_size=3)
)
serial_text = st.text(alphabet=string.ascii_letters + string.digits + "_.+- ", min_size=1)
host_name = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True) | st.builds(
    lambda a: ".".join(map(str, a)), st.tuples(*[st.integers(0, 255)] * 4)
)
alias_name = st.from_regex(r"ua-[a-zA-Z0-9_.-]{1,12}", fullmatch=True)
positive = st.integers(min_value=1, max_value=2**40)


def _maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | strategy


# -- disks --------------------------------------------------------------------------

_BUSES_FOR_DEVICE = {
    "disk": ("virtio", "scsi", "sata", "usb", "ide"),
    "cdrom": ("sata", "scsi", "ide", "usb"),
    "lun": ("scsi",),
    "floppy": ("fdc",),
}
_TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd", "fdc": "fd"}


@st.composite
def iotune(draw: st.DrawFn) -> dict[str, int]:
    """A set of iotune values libvirt accepts: total_* or read/write_*, never both."""
    tune: dict[str, int] = {}
    for kind in ("bytes", "iops"):
        for suffix in ("", "_max"):
            choice = draw(st.sampled_from(("none", "total", "split")))
            if choice == "total":
                tune[f"disk_total_{kind}_sec{suffix}"] = draw(positive)
            elif choice == "split":
                for op in draw(st.sets(st.sampled_from(("read", "write")), min_size=1)):
                    tune[f"disk_{op}_{kind}_sec{suffix}"] = draw(positive)
    for name in [n for n in tune if n.endswith("_max")]:
        if draw(st.booleans()):
            tune[f"{name}_length"] = draw(st.integers(1, 3600))
    if draw(st.booleans()):
        tune["disk_size_iops_sec"] = draw(st.sampled_from((512, 4096, 65536)))
    return tune


@st.composite
def disks(
    draw: st.DrawFn,
    index: int = 0,
    iothread_ids: tuple[int, ...] = (),
    libvirt_9_0: bool = False,
    slot: int | None = None,
) -> config.LibvirtConfigGuestDisk:
    """A valid disk; ``index`` makes its target (and drive address) unique in a guest."""
    source_type = draw(st.sampled_from(config.DISK_SOURCE_TYPES))
    if source_type == "network":
        device = "disk"
    elif source_type == "file":
        device = draw(st.sampled_from(("disk", "disk", "cdrom", "floppy")))
    else:
        device = draw(st.sampled_from(("disk", "cdrom", "lun")))
    bus = draw(st.sampled_from(_BUSES_FOR_DEVICE[device]))
    if bus == "fdc":
        index = index % 2  # a floppy controller has two drives
    disk = config.LibvirtConfigGuestDisk(
        source_type=source_type,
        source_device=device,
        target_bus=bus,
        target_dev=_TARGET_PREFIX[bus] + string.ascii_lowercase[index],
    )
    if source_type == "network":
        protocol = draw(st.sampled_from(("rbd", "rbd", "iscsi", "nbd", "gluster", "http")))
        disk.source_protocol = protocol
        disk.source_name = draw(st.from_regex(r"[a-z0-9_-]{1,8}/[a-z0-9_.-]{1,12}", fullmatch=True))
        low, high = {"rbd": (0, 3), "gluster": (1, 3)}.get(protocol, (1, 1))
        hosts = draw(st.lists(host_name, min_size=low, max_size=high))
        disk.source_hosts = hosts
        if hosts and draw(st.booleans()):
            disk.source_ports = draw(
                st.lists(_maybe(st.integers(1, 65535)), min_size=len(hosts), max_size=len(hosts))
            )
        if protocol in ("rbd", "iscsi") and draw(st.booleans()):
            disk.auth_username = draw(st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True))
            disk.auth_secret_type = "ceph" if protocol == "rbd" else "iscsi"
            disk.auth_secret_uuid = str(draw(st.uuids()))
    elif device in ("disk", "lun") or draw(st.booleans()):
        disk.source_path = draw(abs_path)

    disk.driver_name = draw(_maybe(st.just("qemu")))
    formats = ("raw",) if device == "lun" else ("raw", "qcow2")
    disk.driver_format = draw(_maybe(st.sampled_from(formats)))
    disk.driver_cache = draw(_maybe(st.sampled_from(config.DISK_CACHE_MODES)))
    disk.driver_io = draw(_maybe(st.sampled_from(config.DISK_IO_MODES)))
    disk.driver_error_policy = draw(_maybe(st.sampled_from(config.DISK_ERROR_POLICIES)))
    disk.driver_rerror_policy = draw(_maybe(st.sampled_from(config.DISK_RERROR_POLICIES)))
    disk.driver_copy_on_read = draw(_maybe(st.sampled_from(("on", "off"))))
    disk.driver_discard = draw(_maybe(st.sampled_from(config.DISK_DISCARD_MODES)))
    zeroes = ("off", "on", "unmap") if disk.driver_discard == "unmap" else ("off", "on")
    disk.driver_detect_zeroes = draw(_maybe(st.sampled_from(zeroes)))
    if not libvirt_9_0:
        disk.driver_discard_no_unref = draw(_maybe(st.sampled_from(("on", "off"))))
    if bus == "virtio":
        disk.driver_queues = draw(_maybe(st.integers(1, 16)))
        disk.driver_queue_size = draw(_maybe(st.sampled_from((64, 128, 256, 1024))))
        if iothread_ids and draw(st.booleans()):
            if libvirt_9_0 or draw(st.booleans()):
                disk.driver_iothread = draw(st.sampled_from(iothread_ids))
            else:
                chosen = draw(st.lists(st.sampled_from(iothread_ids), unique=True, min_size=1))
                disk.driver_iothread_queues = {
                    t: draw(st.lists(st.integers(0, 15), unique=True, max_size=3)) for t in chosen
                }
        if slot is not None and draw(st.booleans()):
            disk.device_addr = config.LibvirtConfigGuestDeviceAddressPCI(bus=0, slot=slot)
    elif bus in ("scsi", "sata") and draw(st.booleans()):
        # The unit libvirt would derive from the target name, so none collide.
        disk.device_addr = config.LibvirtConfigGuestDeviceAddressDrive(unit=index)
    for name, value in draw(iotune()).items():
        setattr(disk, name, value)
    if draw(st.booleans()):
        disk.logical_block_size = draw(st.sampled_from((512, 4096)))
        disk.physical_block_size = draw(st.sampled_from((512, 4096)))
    disk.readonly = device == "cdrom" or draw(st.booleans())
    disk.shareable = draw(st.booleans())
    disk.serial = draw(_maybe(serial_text))
    disk.alias = draw(_maybe(alias_name.map(lambda a: f"{a}-{index}")))
    return disk


# -- guests -------------------------------------------------------------------------


@st.composite
def guests(draw: st.DrawFn, libvirt_9_0: bool = False) -> config.LibvirtConfigGuest:
    guest = config.LibvirtConfigGuest(
        virt_type=draw(st.sampled_from(("qemu", "kvm", "test"))),
        name=draw(xml_text.filter(lambda s: "/" not in s and s.strip() == s and s != ".")),
        uuid=draw(_maybe(st.uuids().map(str))),
        memory=draw(st.integers(1024, 16 * 1024 * 1024)),
        vcpus=draw(st.integers(1, 8)),
    )
    guest.iothreads = draw(_maybe(st.integers(1, 4)))
    if guest.iothreads and draw(st.booleans()):
        guest.iothread_ids = draw(
            st.lists(st.integers(1, 64), unique=True, min_size=1, max_size=guest.iothreads)
        )
    known = tuple(guest.iothread_ids) or tuple(range(1, (guest.iothreads or 0) + 1))
    guest.os_arch = draw(_maybe(st.just("x86_64")))
    if draw(st.booleans()):
        guest.os_kernel = draw(abs_path)
        guest.os_initrd = draw(_maybe(abs_path))
        guest.os_cmdline = draw(_maybe(xml_text))
    guest.features = draw(st.lists(st.sampled_from(("acpi", "apic", "pae")), unique=True))
    guest.clock_offset = draw(_maybe(st.sampled_from(("utc", "localtime"))))
    for event in ("on_poweroff", "on_reboot"):
        setattr(guest, event, draw(_maybe(st.sampled_from(("destroy", "restart")))))
    guest.on_crash = draw(_maybe(st.sampled_from(("destroy", "coredump-restart"))))
    guest.emulator = draw(_maybe(st.just("/usr/bin/qemu-system-x86_64")))

    count = draw(st.integers(0, 3))
    devices = [
        draw(disks(index=i, iothread_ids=known, libvirt_9_0=libvirt_9_0, slot=0x10 + i))
        for i in range(count)
    ]
    if any(d.target_bus == "fdc" for d in devices):
        # Two floppies must not share a drive letter.
        floppies = [d for d in devices if d.target_bus == "fdc"]
        devices = [d for d in devices if d.target_bus != "fdc"] + floppies[:1]
    seen: set[str] = set()
    for device in devices:
        # Aliases are unique within a domain; a drawn one may repeat another's.
        if device.alias in seen:
            device.alias = None
        seen.add(device.alias or "")
    if draw(st.booleans()):
        boot = draw(st.permutations(range(1, len(devices) + 1)))
        for disk, order in zip(devices, boot, strict=True):
            disk.boot_order = order
    elif not devices or draw(st.booleans()):
        guest.os_boot_dev = draw(
            st.lists(st.sampled_from(("hd", "cdrom", "network")), unique=True, max_size=3)
        )
    if any(d.target_bus == "scsi" for d in devices) or draw(st.booleans()):
        controller = config.LibvirtConfigGuestController(type="scsi", model="virtio-scsi")
        controller.driver_queues = draw(_maybe(st.integers(1, 8)))
        if known:
            controller.driver_iothread = draw(_maybe(st.sampled_from(known)))
        devices.append(controller)
    if draw(st.booleans()):
        devices.append(
            config.LibvirtConfigGuestSerial(type="file", source_path=draw(abs_path), target_port=0)
        )
        devices.append(config.LibvirtConfigGuestConsole(type="pty", target_type="serial"))
    elif draw(st.booleans()):
        devices.append(config.LibvirtConfigGuestSerial(type="pty"))
    if draw(st.booleans()):
        devices.append(
            config.LibvirtConfigMemoryBalloon(model=draw(st.sampled_from(("none", "virtio"))))
        )
    guest.devices = devices
    return guest
