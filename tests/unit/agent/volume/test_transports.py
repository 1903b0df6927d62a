"""Each transport from its Cinder fixture: config fields, facts and the AIO hint."""

from __future__ import annotations

import hashlib

import pytest
from lxml import etree

from nova_disk_tuning.agent import loader
from nova_disk_tuning.agent.volume import fs
from tests.unit.agent.volume.conftest import GIB, FakeProbe, connection_info

BLOCK = ["iscsi", "iser", "fibre_channel", "nvmeof", "local", "scaleio", "storpool"]
ALL = [*BLOCK, "nfs", "quobyte", "rbd"]


@pytest.mark.parametrize("transport", ALL)
def test_every_driver_loads_by_entry_point(transport, conf, probe):
    driver = loader.volume_driver(transport)(conf, probe)
    assert driver.transport == transport


@pytest.mark.parametrize("transport", BLOCK)
def test_block_transports(transport, conf, probe, as_block_device):
    info = connection_info(transport)
    disk = loader.volume_driver(transport)(conf, probe).connect(info, "vdb")

    device = info["data"]["device_path"]
    xml = etree.fromstring(disk.config.to_xml())
    assert xml.get("type") == "block" and xml.get("device") == "disk"
    assert xml.find("source").get("dev") == device
    assert xml.find("target").attrib == {"dev": "vdb", "bus": "virtio"}
    assert xml.findtext("serial") == info["serial"]
    # No tuning from a volume driver: the policy sets cache, io and discard.
    assert xml.find("driver").attrib == {"name": "qemu", "type": "raw"}
    assert disk.created == ()

    facts = disk.facts
    assert (facts.name, facts.source_type, facts.path) == ("vdb", "block", device)
    assert facts.aio_hint == "native" and facts.driver == transport and facts.is_volume
    assert facts.fully_allocated is True and facts.direct_io is True
    assert facts.size == GIB
    assert ("direct_io", device) in probe.asked
    assert any("thin LUN" in note for note in disk.notes)


def test_block_direct_io_is_measured_not_assumed(conf, as_block_device):
    disk = loader.volume_driver("iscsi")(conf, FakeProbe(direct_io=False)).connect(
        connection_info("iscsi"), "vdb"
    )
    assert disk.facts.direct_io is False
    assert "O_DIRECT does not work on it" in disk.notes


def test_block_lvm_volume_is_reported_as_lvm(conf, probe, as_block_device):
    probe.kind = "lvm"
    disk = loader.volume_driver("local")(conf, probe).connect(connection_info("local"), "vdc")
    # io_uring is denied on LVM by the policy: the fact must reach it.
    assert disk.facts.storage_kind == "lvm"
    assert ("storage_kind", disk.facts.path) in probe.asked


def test_fibre_channel_qos_strings_become_iotune(conf, probe, as_block_device):
    disk = loader.volume_driver("fibre_channel")(conf, probe).connect(
        connection_info("fibre_channel"), "vdd"
    )
    iotune = etree.fromstring(disk.config.to_xml()).find("iotune")
    assert {child.tag: child.text for child in iotune} == {
        "total_bytes_sec": "104857600",
        "total_iops_sec": "2000",
        "total_iops_sec_max": "4000",
        "size_iops_sec": "4096",
        "total_iops_sec_max_length": "60",
    }
    assert disk.config.disk_total_iops_sec == 2000


def _share_file(base, export, name):
    """The volume file where Nova's layout puts it: <base>/<md5(export)>/<name>."""
    mount = base / hashlib.md5(export.encode()).hexdigest()
    mount.mkdir(parents=True)
    path = mount / name
    path.write_bytes(b"")
    return str(path)


def test_nfs_file_under_the_mount_base(make_conf, tmp_path):
    info = connection_info("nfs")
    data = info["data"]
    path = _share_file(tmp_path, data["export"], data["name"])
    conf = make_conf(libvirt={"nfs_mount_point_base": str(tmp_path)})
    probe = FakeProbe(size=GIB, allocated=GIB // 4)
    disk = loader.volume_driver("nfs")(conf, probe).connect(info, "vde")

    xml = etree.fromstring(disk.config.to_xml())
    assert xml.get("type") == "file" and xml.find("source").get("file") == path
    assert xml.find("driver").attrib == {"name": "qemu", "type": "raw"}
    facts = disk.facts
    assert (facts.source_type, facts.path, facts.format) == ("file", path, "raw")
    assert facts.aio_hint == "native" and facts.storage_kind == "nfs"
    assert (facts.size, facts.allocated, facts.fully_allocated) == (GIB, GIB // 4, False)
    assert facts.discard == "unmap"


def test_nfs_device_path_wins_over_the_mount_base(conf, tmp_path, probe):
    volume = tmp_path / "connected-by-nova"
    volume.write_bytes(b"")
    info = connection_info("nfs")
    info["data"]["device_path"] = str(volume)
    disk = loader.volume_driver("nfs")(conf, probe).connect(info, "vdb")
    assert disk.config.source_path == str(volume) == disk.facts.path


def test_nfs_default_mount_base_is_novas(conf):
    driver = loader.volume_driver("nfs")(conf, FakeProbe())
    digest = hashlib.md5(b"192.0.2.30:/srv/cinder").hexdigest()
    assert driver.mount_point("192.0.2.30:/srv/cinder") == f"/var/lib/nova/mnt/{digest}"


class FakeQemuImg:
    def __init__(self, virtual_size: int) -> None:
        self.virtual_size = virtual_size
        self.backing_file = None
        self.asked: list[tuple[str, str | None]] = []

    def info(self, path: str, format: str | None = None):
        self.asked.append((path, format))
        return self


@pytest.mark.parametrize(("allocated", "covered"), [(GIB + 4096, False), (2 * GIB, True)])
def test_quobyte_qcow2_allocation_against_virtual_size(make_conf, tmp_path, allocated, covered):
    info = connection_info("quobyte")
    data = info["data"]
    # Nova hashes the export without the quobyte:// scheme.
    path = _share_file(tmp_path, "quobyte.example.org/cinder", data["name"])
    conf = make_conf(libvirt={"quobyte_mount_point_base": str(tmp_path)})
    qemu_img = FakeQemuImg(2 * GIB)
    probe = FakeProbe(size=allocated, allocated=allocated)
    driver = fs.QuobyteVolumeDriver(conf, probe, qemu_img=qemu_img)
    disk = driver.connect(info, "vdf")

    assert qemu_img.asked == [(path, "qcow2")]
    assert disk.config.driver_format == "qcow2"
    facts = disk.facts
    assert (facts.format, facts.size, facts.allocated) == ("qcow2", 2 * GIB, allocated)
    # Compared with the 2 GiB virtual size, not with st_size (which the
    # probe says is fully allocated in both cases).
    assert facts.fully_allocated is covered
    assert facts.allocation_covers_size is covered
    assert facts.storage_kind == "quobyte" and facts.aio_hint == "native"


def test_rbd_network_disk(conf):
    info = connection_info("rbd")
    disk = loader.volume_driver("rbd")(conf, FakeProbe()).connect(info, "vdg")
    xml = etree.fromstring(disk.config.to_xml())
    assert xml.get("type") == "network"
    source = xml.find("source")
    assert source.attrib == {"protocol": "rbd", "name": info["data"]["name"]}
    assert [(h.get("name"), h.get("port")) for h in source] == [
        ("192.0.2.41", "6789"),
        ("192.0.2.42", "6789"),
        ("192.0.2.43", "6789"),
    ]
    assert xml.find("auth").get("username") == "cinder"
    assert xml.find("auth/secret").attrib == {
        "type": "ceph",
        "uuid": "457eb676-33da-42ec-9a8c-9293d545c337",
    }
    assert {c.tag: c.text for c in xml.find("iotune")} == {
        "read_iops_sec": "500",
        "write_iops_sec": "250",
    }
    facts = disk.facts
    assert (facts.source_type, facts.path, facts.aio_hint) == ("network", None, None)
    assert facts.is_volume and facts.driver == "rbd" and facts.discard == "unmap"
    assert facts.direct_io is None and facts.size is None


def test_rbd_without_cinder_credentials_uses_nova_conf(make_conf):
    info = connection_info("rbd")
    info["data"]["auth_enabled"] = False
    conf = make_conf(
        libvirt={"rbd_user": "nova", "rbd_secret_uuid": "0b1e8d3c-6a5f-4d2e-9c7b-5f4e3d2c1b0a"}
    )
    config = loader.volume_driver("rbd")(conf, FakeProbe()).get_config(info, "vdb")
    assert (config.auth_username, config.auth_secret_type, config.auth_secret_uuid) == (
        "nova",
        "ceph",
        "0b1e8d3c-6a5f-4d2e-9c7b-5f4e3d2c1b0a",
    )


def test_rbd_without_any_credentials_has_no_auth(conf):
    info = connection_info("rbd")
    info["data"]["auth_enabled"] = False
    config = loader.volume_driver("rbd")(conf, FakeProbe()).get_config(info, "vdb")
    assert config.auth_username is None
    assert etree.fromstring(config.to_xml()).find("auth") is None


def test_rbd_secret_uuid_falls_back_to_nova_conf(make_conf):
    info = connection_info("rbd")
    del info["data"]["secret_uuid"]
    conf = make_conf(libvirt={"rbd_secret_uuid": "0b1e8d3c-6a5f-4d2e-9c7b-5f4e3d2c1b0a"})
    config = loader.volume_driver("rbd")(conf, FakeProbe()).get_config(info, "vdb")
    assert config.auth_username == "cinder"
    assert config.auth_secret_uuid == "0b1e8d3c-6a5f-4d2e-9c7b-5f4e3d2c1b0a"


def test_the_hook_can_be_overridden_per_volume(conf, as_block_device):
    """A third-party driver decides per volume through the one hook."""
    from nova_disk_tuning.agent.volume.block import ISCSIVolumeDriver

    class PickyDriver(ISCSIVolumeDriver):
        def aio_hint(self, connection_info):
            return "io_uring" if connection_info["data"].get("fast") else None

    info = connection_info("iscsi")
    assert PickyDriver(conf, FakeProbe()).connect(info, "vdb").facts.aio_hint is None
    info["data"]["fast"] = True
    assert PickyDriver(conf, FakeProbe()).connect(info, "vdb").facts.aio_hint == "io_uring"
