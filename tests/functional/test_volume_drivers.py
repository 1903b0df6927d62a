"""Volume drivers against real storage, through the policy, into libvirt's schema.

What is real here: block transports (``local``, ``iscsi``) get a real loop
device as their ``data.device_path`` (what os-brick's ``connect_volume``
returns; for iSCSI through a ``/dev/disk/by-path``-style symlink); NFS-style
volumes are real files on a real ext4 file system on a loop device standing
in for the mounted share, found through Nova's ``<mount base>/<md5(export)>``
layout; qcow2 sizes come from the real qemu-img. What is not: iSCSI login,
NFS and Ceph servers do not exist on this machine, so the RBD disk is
described from its Cinder fixture only (QEMU's client needs no host
attachment). The resulting XML is checked by libvirt's test driver with
``VIR_DOMAIN_DEFINE_VALIDATE`` (the real RelaxNG schema).
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import libvirt
import pytest
from lxml import etree

from nova_disk_tuning import domxml as config
from nova_disk_tuning.agent import loader
from nova_disk_tuning.policy import decide as tuning
from nova_disk_tuning.policy.facts import HostCaps
from nova_disk_tuning.storage.probe import StorageProbe
from tests.functional.conftest import MiB, requires_root
from tests.unit.agent.volume.conftest import connection_info

pytestmark = requires_root

# Debian 12's libvirt and QEMU with io_uring usable: the policy's inputs
# pinned, so the expected settings do not depend on this host's kernel.
HOST = HostCaps((9, 0, 0), (7, 2, 0), True)


def connect(conf, transport, info, target="vdb"):
    return loader.volume_driver(transport)(conf, StorageProbe()).connect(info, target)


@pytest.fixture
def share(make_conf, make_filesystem, tmp_path):
    """An ext4 file system mounted where Nova mounts the NFS fixture's export.

    Returns (conf, directory of the share, connection_info).
    """
    info = connection_info("nfs")
    mount = make_filesystem("ext4", size=128 * MiB)
    base = tmp_path / "mnt"
    base.mkdir()
    digest = hashlib.md5(info["data"]["export"].encode()).hexdigest()
    # The mount base holds the share under its hash, as after Nova's mount.
    os.symlink(mount.path, base / digest)
    conf = make_conf(libvirt={"nfs_mount_point_base": str(base)})
    return conf, str(base / digest), info


@pytest.mark.parametrize("sector_size", [512, 4096])
@pytest.mark.parametrize("transport", ["local", "iscsi"])
def test_block_volume_on_a_loop_device(make_conf, loop_device, tmp_path, transport, sector_size):
    loop = loop_device(sector_size=sector_size, size=32 * MiB)
    info = connection_info(transport)
    device = loop.path
    if transport == "iscsi":
        # os-brick hands back the stable /dev/disk/by-path name, a symlink.
        device = str(tmp_path / "ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.openstack:vol-lun-1")
        os.symlink(loop.path, device)
    info["data"]["device_path"] = device
    conf = make_conf()

    disk = connect(conf, transport, info)
    facts = disk.facts
    assert (facts.source_type, facts.path, facts.size) == ("block", device, 32 * MiB)
    assert facts.direct_io is True  # measured: an aligned O_DIRECT read of the device
    assert facts.fully_allocated is True and facts.aio_hint == "native"
    assert disk.created == ()

    result = tuning.decide(facts, HOST, conf)
    assert (result.cache.value, result.io.value) == ("none", "native")
    assert f"volume driver {transport} prefers native" in result.io.reason


def test_missing_loop_device_is_a_clear_error(make_conf, loop_device):
    from nova_disk_tuning import exception

    loop = loop_device()
    info = connection_info("local")
    info["data"]["device_path"] = loop.path + "-gone"
    with pytest.raises(exception.VolumeDriverError, match=r"-gone does not exist; os-brick"):
        connect(make_conf(), "local", info)


def test_regular_file_is_not_a_block_volume(make_conf, share):
    from nova_disk_tuning import exception

    _, directory, _ = share
    path = os.path.join(directory, "file")
    open(path, "wb").close()
    info = connection_info("iscsi")
    info["data"]["device_path"] = path
    with pytest.raises(exception.VolumeDriverError, match=r"is not a block device"):
        connect(make_conf(), "iscsi", info)


def _volume_file(directory: str, name: str, size: int, allocate: bool) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        if allocate:
            os.posix_fallocate(handle.fileno(), 0, size)
        else:
            handle.truncate(size)
    return path


@pytest.mark.parametrize(("allocate", "io"), [(False, "threads"), (True, "native")])
def test_nfs_style_file_on_ext4(share, allocate, io):
    conf, directory, info = share
    path = _volume_file(directory, info["data"]["name"], 16 * MiB, allocate)

    disk = connect(conf, "nfs", info)
    facts = disk.facts
    assert (facts.source_type, facts.path, facts.storage_kind) == ("file", path, "nfs")
    assert facts.size == 16 * MiB and facts.fully_allocated is allocate
    assert facts.direct_io is True and facts.aio_hint == "native"
    assert any("on ext4" in note for note in disk.notes)

    result = tuning.decide(facts, HOST, conf)
    assert (result.cache.value, result.io.value) == ("none", io)
    if not allocate:
        assert "not fully allocated" in result.io.reason


@pytest.mark.parametrize(("preallocation", "io"), [("off", "threads"), ("falloc", "native")])
def test_nfs_style_qcow2_against_its_virtual_size(share, preallocation, io):
    conf, directory, info = share
    info["data"]["format"] = "qcow2"
    path = os.path.join(directory, info["data"]["name"])
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"preallocation={preallocation}",
         path, str(16 * MiB)],
        check=True,
    )  # fmt: skip

    facts = connect(conf, "nfs", info).facts
    assert facts.format == "qcow2" and facts.size == 16 * MiB
    assert facts.allocation_covers_size is (preallocation == "falloc")
    assert tuning.decide(facts, HOST, conf).io.value == io


def test_use_default_aio_mode_for_volumes_on_real_storage(make_conf, loop_device):
    loop = loop_device()
    info = connection_info("local")
    info["data"]["device_path"] = loop.path
    conf = make_conf(libvirt={"use_default_aio_mode_for_volumes": True})
    facts = connect(conf, "local", info).facts
    result = tuning.decide(facts, HOST, conf)
    # The facts (a block device with O_DIRECT) still make native; the hint is not used.
    assert result.io.value == "native"
    assert "ignored ([libvirt] use_default_aio_mode_for_volumes)" in result.io.reason


def test_tuned_volume_disks_pass_libvirt_schema(make_conf, loop_device, share):
    """local + iscsi (loop devices), nfs (ext4 file) and rbd (fixture) in one guest."""
    conf, directory, nfs_info = share
    _volume_file(directory, nfs_info["data"]["name"], 8 * MiB, allocate=True)
    local_info, iscsi_info = connection_info("local"), connection_info("iscsi")
    local_info["data"]["device_path"] = loop_device().path
    iscsi_info["data"]["device_path"] = loop_device(sector_size=4096).path
    iscsi_info["multiattach"] = True
    iscsi_info["data"]["access_mode"] = "ro"
    rbd_info = connection_info("rbd")
    disks = [
        connect(conf, "local", local_info, "vdb"),
        connect(conf, "iscsi", iscsi_info, "vdc"),
        connect(conf, "nfs", nfs_info, "vdd"),
        connect(conf, "rbd", rbd_info, "vde"),
    ]

    guest = config.LibvirtConfigGuest(virt_type="qemu", name="volumes", memory=131072, vcpus=2)
    for disk in disks:
        tuning.decide(disk.facts, HOST, conf).apply(disk.config)
        guest.add_device(disk.config)

    conn = libvirt.open("test:///default")
    try:
        domain = conn.defineXMLFlags(guest.to_xml(), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        try:
            kept = etree.fromstring(domain.XMLDesc(0))
        finally:
            domain.undefine()
    finally:
        conn.close()

    def disk(target: str) -> etree._Element:
        (element,) = kept.xpath(f"devices/disk[target/@dev='{target}']")
        return element

    def driver(target: str) -> dict[str, str]:
        return dict(disk(target).find("driver").attrib)

    assert driver("vdb") == {"name": "qemu", "type": "raw", "cache": "none", "io": "native"}
    assert disk("vdb").findtext("serial") == local_info["serial"]
    vdc = disk("vdc")
    assert vdc.find("shareable") is not None and vdc.find("readonly") is not None
    assert driver("vdc")["cache"] == "none" and driver("vdc")["discard"] == "unmap"
    assert driver("vdd")["io"] == "native" and driver("vdd")["discard"] == "unmap"
    assert "io" not in driver("vde")
    assert disk("vde").find("source").get("protocol") == "rbd"
    assert disk("vde").findtext("iotune/read_iops_sec") == "500"
