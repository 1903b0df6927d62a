"""The XML our config objects render is what libvirt accepts.

Real libvirt, no mocks: the in-process test driver (``test:///default``)
defines each guest with ``VIR_DOMAIN_DEFINE_VALIDATE``, which checks it
against libvirt's installed RelaxNG schema and runs libvirt's own parser;
``virt-xml-validate`` (libvirt-clients) checks a sample of files from the
shell.  Neither needs root.

libvirt 9.0 (Debian 12) has no per-queue IOThread mapping and no
``discard_no_unref``; hypothesis guests leave those out here, and
``test_newer_driver_features_follow_the_libvirt_version`` pins what this
host's libvirt does with them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from hypothesis import HealthCheck, given, settings
from lxml import etree

from nova_disk_tuning import domxml as config
from nova_disk_tuning import exception
from tests.unit.domxml import test_config_strategies as strategies

SECRET = "0b1e8d3c-6a5f-4d2e-9c7b-5f4e3d2c1b0a"


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    connection = libvirt.open("test:///default")
    try:
        yield connection
    finally:
        connection.close()


def define(conn: libvirt.virConnect, xml: str) -> str:
    """Define with schema validation, return libvirt's own XML, undefine."""
    domain = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        return domain.XMLDesc(0)
    finally:
        domain.undefine()


def _disk(**kwargs: object) -> config.LibvirtConfigGuestDisk:
    return config.LibvirtConfigGuestDisk(**kwargs)


def corpus(tmp: Path) -> dict[str, config.LibvirtConfigGuest]:
    """Hand-written guests covering every feature the plugin renders on libvirt 9.0."""
    image = tmp / "disk & <image> \u00e9.qcow2"
    image.write_bytes(b"")
    log = tmp / "console 'log'.txt"

    def guest(name: str, **kwargs: object) -> config.LibvirtConfigGuest:
        return config.LibvirtConfigGuest(
            virt_type="qemu", name=name, memory=131072, vcpus=1, **kwargs
        )

    return {
        "file-disk-tuned": guest(
            "file & <disk>",
            iothreads=2,
            devices=[
                _disk(
                    source_path=str(image),
                    driver_name="qemu",
                    driver_format="qcow2",
                    driver_cache="none",
                    driver_io="native",
                    driver_discard="unmap",
                    driver_detect_zeroes="unmap",
                    driver_iothread=2,
                    driver_queues=2,
                    driver_queue_size=256,
                    driver_error_policy="stop",
                    driver_rerror_policy="report",
                    driver_copy_on_read="off",
                    target_dev="vda",
                    target_bus="virtio",
                    serial="vol-1",
                    boot_order=1,
                    alias="ua-root",
                    logical_block_size=512,
                    physical_block_size=4096,
                    device_addr=config.LibvirtConfigGuestDeviceAddressPCI(slot=7),
                )
            ],
        ),
        "block-and-lun": guest(
            "block",
            devices=[
                _disk(
                    source_type="block",
                    source_path="/dev/loop7",
                    driver_name="qemu",
                    driver_format="raw",
                    driver_cache="directsync",
                    driver_io="io_uring",
                    target_dev="vda",
                    target_bus="virtio",
                ),
                _disk(
                    source_type="block",
                    source_device="lun",
                    source_path="/dev/sdz",
                    target_dev="sda",
                    target_bus="scsi",
                    shareable=True,
                    device_addr=config.LibvirtConfigGuestDeviceAddressDrive(unit=0),
                ),
                config.LibvirtConfigGuestController(
                    type="scsi", model="virtio-scsi", index=0, driver_queues=2
                ),
            ],
        ),
        "network-disks": guest(
            "network",
            devices=[
                _disk(
                    source_type="network",
                    source_protocol="rbd",
                    source_name="volumes/volume-1",
                    source_hosts=["mon1.example.org", "192.0.2.7", "2001:db8::1"],
                    source_ports=[6789, None, 3300],
                    auth_username="cinder",
                    auth_secret_type="ceph",
                    auth_secret_uuid=SECRET,
                    driver_name="qemu",
                    driver_format="raw",
                    driver_cache="writeback",
                    target_dev="vda",
                    target_bus="virtio",
                    disk_total_bytes_sec=10_000_000,
                    disk_read_iops_sec=100,
                    disk_write_iops_sec=200,
                    disk_read_iops_sec_max=400,
                    disk_read_iops_sec_max_length=10,
                    disk_size_iops_sec=4096,
                ),
                _disk(
                    source_type="network",
                    source_protocol="iscsi",
                    source_name="iqn.2010-10.org.openstack:volume-2/1",
                    source_hosts=["192.0.2.8"],
                    source_ports=[3260],
                    auth_username="chap",
                    auth_secret_type="iscsi",
                    auth_secret_uuid=SECRET,
                    target_dev="vdb",
                    target_bus="virtio",
                ),
            ],
        ),
        "cdrom-and-floppy": guest(
            "media",
            os_boot_dev=["cdrom", "hd"],
            devices=[
                _disk(source_device="cdrom", target_dev="hda", target_bus="ide", readonly=True),
                _disk(
                    source_device="cdrom",
                    source_path=str(image),
                    target_dev="sda",
                    target_bus="sata",
                    readonly=True,
                ),
                _disk(source_device="floppy", target_dev="fda", target_bus="fdc"),
            ],
        ),
        "iothreads-kernel-boot": guest(
            "tiny \u00e9",
            uuid="6f9619ff-8b86-d011-b42d-00c04fc964ff",
            iothreads=3,
            iothread_ids=[1, 5, 9],
            os_arch="x86_64",
            os_kernel=str(tmp / "vmlinuz"),
            os_initrd=str(tmp / "initrd.img"),
            os_cmdline="console=ttyS0 root=/dev/vda rw",
            features=["acpi", "apic"],
            clock_offset="utc",
            on_poweroff="destroy",
            on_reboot="restart",
            on_crash="coredump-restart",
            emulator="/usr/bin/qemu-system-x86_64",
            devices=[
                _disk(
                    source_path=str(image), target_dev="vda", target_bus="virtio", driver_iothread=5
                ),
                _disk(source_path=str(image) + ".2", target_dev="sdb", target_bus="scsi"),
                config.LibvirtConfigGuestController(
                    type="scsi", model="virtio-scsi", driver_iothread=9, driver_queues=4
                ),
                config.LibvirtConfigGuestSerial(
                    type="file", source_path=str(log), target_type="isa-serial", target_port=0
                ),
                config.LibvirtConfigGuestConsole(type="pty", target_type="serial", target_port=0),
                config.LibvirtConfigMemoryBalloon(model="none"),
            ],
        ),
    }  # fmt: skip


CORPUS_NAMES = ["file-disk-tuned", "block-and-lun", "network-disks", "cdrom-and-floppy",
                "iothreads-kernel-boot"]  # fmt: skip


def test_every_corpus_guest_is_checked(tmp_path: Path) -> None:
    assert sorted(corpus(tmp_path)) == sorted(CORPUS_NAMES)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_guest_is_accepted_and_read_back_alike(
    conn: libvirt.virConnect, tmp_path: Path, name: str
) -> None:
    guest = corpus(tmp_path)[name]
    libvirt_xml = define(conn, guest.to_xml())
    # libvirt adds defaults (addresses, controllers, placement) but must keep
    # every disk setting we rendered.
    echoed = config.LibvirtConfigGuest()
    echoed.parse_str(libvirt_xml)
    ours = [d for d in guest.devices if isinstance(d, config.LibvirtConfigGuestDisk)]
    theirs = [d for d in echoed.devices if isinstance(d, config.LibvirtConfigGuestDisk)]
    assert len(theirs) == len(ours)
    compared = [n for n in vars(ours[0]) if n != "device_addr"]
    for mine, libvirts in zip(ours, theirs, strict=True):
        for attribute in compared:
            if attribute == "alias" and not (mine.alias or "").startswith("ua-"):
                continue  # libvirt keeps only user aliases ("ua-") in inactive XML
            assert getattr(libvirts, attribute) == getattr(mine, attribute), attribute
        if mine.device_addr is not None:
            assert libvirts.device_addr == mine.device_addr
    assert echoed.name == guest.name
    assert echoed.iothreads == guest.iothreads
    assert echoed.os_kernel == guest.os_kernel
    assert echoed.os_cmdline == guest.os_cmdline


@pytest.mark.skipif(shutil.which("virt-xml-validate") is None, reason="needs libvirt-clients")
def test_virt_xml_validate_agrees(tmp_path: Path) -> None:
    for name, guest in corpus(tmp_path).items():
        path = tmp_path / f"{name}.xml"
        path.write_text(guest.to_xml(), encoding="utf-8")
        result = subprocess.run(
            ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
    # And it can fail: the same document with a value our classes refuse.
    broken = etree.fromstring(corpus(tmp_path)["file-disk-tuned"].to_xml().encode())
    broken.find("devices/disk/driver").set("io", "fast")
    path = tmp_path / "broken.xml"
    path.write_bytes(etree.tostring(broken))
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True)
    assert result.returncode != 0


_SCHEMA_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@_SCHEMA_SETTINGS
@given(guest=strategies.guests(libvirt_9_0=True))
def test_generated_guests_are_accepted(
    conn: libvirt.virConnect, guest: config.LibvirtConfigGuest
) -> None:
    guest.name = "gen-" + guest.name  # never clash with the driver's own "test" domain
    define(conn, guest.to_xml())


# -- invalid values: refused by us, and libvirt would have refused them too ------------------

_VALID_DISK = {
    "source_path": "/var/lib/images/disk",
    "target_dev": "vda",
    "target_bus": "virtio",
}

INVALID = [
    # (attribute, bad value, where it sits in the XML: element path, XML attribute or None)
    ("driver_io", "fast", ("devices/disk/driver", "io")),
    ("driver_cache", "writearound", ("devices/disk/driver", "cache")),
    ("driver_discard", "trim", ("devices/disk/driver", "discard")),
    ("driver_detect_zeroes", "yes", ("devices/disk/driver", "detect_zeroes")),
    ("driver_error_policy", "panic", ("devices/disk/driver", "error_policy")),
    ("driver_rerror_policy", "enospace", ("devices/disk/driver", "rerror_policy")),
    ("driver_copy_on_read", "yes", ("devices/disk/driver", "copy_on_read")),
    ("driver_queues", 0, ("devices/disk/driver", "queues")),
    ("driver_format", "qcow3", ("devices/disk/driver", "type")),
    ("target_bus", "nvme", ("devices/disk/target", "bus")),
    ("source_type", "volume", ("devices/disk", "type")),
    ("source_device", "tape", ("devices/disk", "device")),
    ("serial", "a&b<c>", ("devices/disk/serial", None)),
    ("disk_total_bytes_sec", -1, ("devices/disk/iotune/total_bytes_sec", None)),
]


@pytest.mark.parametrize(("attribute", "value", "where"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_value_refused_before_libvirt_which_would_refuse_it_too(
    conn: libvirt.virConnect, attribute: str, value: object, where: tuple[str, str | None]
) -> None:
    disk = _disk(driver_name="qemu", driver_format="raw", driver_queues=1, serial="s",
                 disk_total_bytes_sec=1, **_VALID_DISK)  # fmt: skip
    guest = config.LibvirtConfigGuest(virt_type="qemu", name="invalid-check", devices=[disk])
    with pytest.raises(exception.InvalidConfigValue) as info:
        setattr(disk, attribute, value)
    assert attribute in str(info.value) and "allowed values are" in str(info.value)

    # Put the same value into otherwise valid XML by hand: libvirt refuses it.
    root = etree.fromstring(guest.to_xml().encode())
    path, xml_attribute = where
    element = root.find(path)
    if xml_attribute is None:
        element.text = str(value)
    else:
        element.set(xml_attribute, str(value))
    with pytest.raises(libvirt.libvirtError):
        define(conn, etree.tostring(root, encoding="unicode"))
    define(conn, guest.to_xml())  # while the valid original is accepted


def test_undefined_iothread_refused_before_libvirt(conn: libvirt.virConnect) -> None:
    disk = _disk(driver_iothread=3, **_VALID_DISK)
    guest = config.LibvirtConfigGuest(virt_type="qemu", name="iothread-check", iothreads=2,
                                      devices=[disk])  # fmt: skip
    with pytest.raises(exception.InvalidConfigValue, match="IOThread ids defined"):
        guest.to_xml()
    guest.iothreads = 3
    assert "iothread" in define(conn, guest.to_xml())


def test_newer_driver_features_follow_the_libvirt_version(conn: libvirt.virConnect) -> None:
    """Per-queue mapping (libvirt 10.0) and discard_no_unref (9.5) on this host's libvirt."""
    version = libvirt.getVersion()
    cases = {
        10_000_000: {"driver_queues": 2, "driver_iothread_queues": {1: [0], 2: [1]}},
        9_005_000: {"driver_format": "qcow2", "driver_discard_no_unref": "on"},
    }
    for needed, settings_ in cases.items():
        guest = config.LibvirtConfigGuest(
            virt_type="qemu",
            name="newer-features",
            iothreads=2,
            devices=[_disk(driver_name="qemu", **settings_, **_VALID_DISK)],
        )
        if version >= needed:
            define(conn, guest.to_xml())
        else:
            with pytest.raises(libvirt.libvirtError, match="schema"):
                define(conn, guest.to_xml())
