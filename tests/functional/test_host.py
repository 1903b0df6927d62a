"""Host against libvirt's in-process test driver (test:///default)."""

from __future__ import annotations

import libvirt
import pytest

from nova_disk_tuning.common.versions import version_from_int
from nova_disk_tuning.host import Host, host_caps
from nova_disk_tuning.storage.kernel import io_uring_support


@pytest.fixture
def host(make_conf):
    with Host(make_conf(libvirt={"connection_uri": "test:///default"})) as h:
        yield h


def test_versions_from_the_test_driver(host):
    conn = host.get_connection()
    assert conn.getType() == "TEST"
    # The test driver's getVersion() is its own (0.0.2), not a QEMU version:
    # host_caps (the one reader, which the Nova drop-in calls too) says so.
    assert conn.getVersion() == 2
    caps = host_caps(conn)
    assert caps.qemu_version is None
    # The library's own answer, asked without a connection.
    assert caps.libvirt_version == version_from_int(libvirt.getVersion())


def test_caps(host):
    caps = host.caps()
    assert caps.libvirt_version == version_from_int(libvirt.getVersion())
    assert caps.qemu_version is None
    assert caps.kernel_io_uring == io_uring_support().usable
    # QEMU unknown: nothing that needs a QEMU version is claimed.
    assert not caps.io_uring and not caps.iothread_queue_mapping
    assert "QEMU version unknown" in caps.io_uring_missing()
    assert caps.discard_no_unref == (caps.libvirt_version >= (9, 5, 0))
    assert host.caps() is caps


def test_connection_is_lazy_kept_and_reopened(make_conf):
    h = Host(make_conf(libvirt={"connection_uri": "test:///default"}))
    assert h._conn is None
    conn = h.get_connection()
    assert h.get_connection() is conn and conn.isAlive()
    h.close()
    assert h._conn is None
    assert h.get_connection().isAlive()
    h.close()


def test_read_only_connection(make_conf):
    with Host(make_conf(libvirt={"connection_uri": "test:///default"}), read_only=True) as h:
        assert h.get_connection().isAlive()
        assert h.caps().libvirt_version >= (1, 0, 0)


def test_tuned_guest_is_accepted_by_this_libvirt(host, make_conf, tmp_path):
    """The policy, fed this host's real caps, renders XML libvirt validates and keeps."""
    from lxml import etree

    from nova_disk_tuning import domxml as config
    from nova_disk_tuning.policy.decide import tune_guest
    from nova_disk_tuning.policy.facts import DiskFacts

    image = tmp_path / "disk"
    image.write_bytes(b"\0" * 65536)
    facts = [
        DiskFacts(
            name="vda", source_type="file", path=str(image), size=65536, allocated=65536,
            direct_io=True,
        ),
        DiskFacts(name="vdb", source_type="block", path="/dev/loop7", direct_io=True),
        DiskFacts(name="sda", source_type="block", path="/dev/loop8", bus="scsi"),
    ]  # fmt: skip
    conf = make_conf(
        libvirt={"hw_disk_discard": "unmap"},
        disk_tuning={"iothreads": 4, "detect_zeroes": "unmap"},
    )
    result = tune_guest(facts, host.caps(), conf, vcpus=2)
    guest = config.LibvirtConfigGuest(virt_type="qemu", name="tuned", memory=131072, vcpus=2)
    for fact in facts:
        guest.add_device(
            config.LibvirtConfigGuestDisk(
                source_type=fact.source_type, source_path=fact.path, driver_name="qemu",
                driver_format="raw", target_dev=fact.name, target_bus=fact.bus,
            )
        )  # fmt: skip
    guest.add_device(config.LibvirtConfigGuestController(type="scsi", model="virtio-scsi", index=0))
    result.apply_to_guest(guest)

    domain = host.get_connection().defineXMLFlags(
        guest.to_xml(), libvirt.VIR_DOMAIN_DEFINE_VALIDATE
    )
    try:
        kept = etree.fromstring(domain.XMLDesc(0))
    finally:
        domain.undefine()
    # Three devices to bind: the fourth IOThread is not defined.
    assert kept.findtext("iothreads") == "3"

    def driver(xpath: str):
        (element,) = kept.xpath(xpath)
        return element

    vda = driver("devices/disk[target/@dev='vda']/driver")
    assert vda.get("io") == "native" and vda.get("cache") == "none"
    assert vda.get("discard") == "unmap" and vda.get("detect_zeroes") == "unmap"
    assert vda.get("iothread") == "1" and vda.get("queues") == "2"
    assert driver("devices/disk[target/@dev='vdb']/driver").get("iothread") == "2"
    scsi = driver("devices/controller[@model='virtio-scsi']/driver")
    assert scsi.get("iothread") == "3" and scsi.get("queues") == "2"
    assert driver("devices/disk[target/@dev='sda']/driver").get("iothread") is None
