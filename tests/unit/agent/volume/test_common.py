"""What every transport shares: qos, multiattach, access mode, discard, errors."""

from __future__ import annotations

import logging

import pytest
from lxml import etree

from nova_disk_tuning import exception
from nova_disk_tuning.agent import loader
from tests.unit.agent.volume.conftest import FakeProbe, connection_info


def iscsi(conf, info=None, target="vdb", **kwargs):
    driver = loader.volume_driver("iscsi")(conf, FakeProbe())
    return driver.connect(info or connection_info("iscsi"), target, **kwargs)


@pytest.fixture(autouse=True)
def _block(as_block_device):
    """Fixture device paths stand for block devices in this module."""


def test_qos_specs_map_to_iotune_and_unknown_keys_are_logged(conf, caplog):
    info = connection_info("iscsi")
    info["data"]["qos_specs"] = {
        "read_bytes_sec": 1048576,
        "write_bytes_sec": "2097152",
        "read_iops_sec_max": 800,
        "read_iops_sec": 400,
        "read_iops_sec_max_length": 30,
        "total_iops_sec_per_gb": "10",
        "consumer": "front-end",
        "write_iops_sec": 0,
    }
    with caplog.at_level(logging.WARNING):
        config = iscsi(conf, info).config
    iotune = etree.fromstring(config.to_xml()).find("iotune")
    assert {c.tag: c.text for c in iotune} == {
        "read_bytes_sec": "1048576",
        "write_bytes_sec": "2097152",
        "read_iops_sec": "400",
        "read_iops_sec_max": "800",
        "read_iops_sec_max_length": "30",
    }
    # 0 is "no limit": left out rather than rejected.
    assert config.disk_write_iops_sec is None
    ignored = [r.getMessage() for r in caplog.records if "unknown qos_specs key" in r.getMessage()]
    assert len(ignored) == 2
    assert "'consumer'" in ignored[0] and "'total_iops_sec_per_gb'" in ignored[1]


def test_top_level_qos_specs_are_accepted(conf):
    info = connection_info("iscsi")
    info["qos_specs"] = {"total_iops_sec": "300"}
    assert iscsi(conf, info).config.disk_total_iops_sec == 300


def test_qos_specs_that_are_not_a_dict_are_ignored(conf, caplog):
    info = connection_info("iscsi")
    info["data"]["qos_specs"] = "fast"
    with caplog.at_level(logging.WARNING):
        config = iscsi(conf, info).config
    assert etree.fromstring(config.to_xml()).find("iotune") is None
    assert "not a dict of limits" in caplog.text


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ({"total_iops_sec": "lots"}, r"qos_specs total_iops_sec='lots' is not a whole number"),
        ({"read_iops_sec": -5}, r"disk_read_iops_sec.*positive integer"),
        (
            {"total_bytes_sec": 10, "read_bytes_sec": 5},
            r"disk_total_bytes_sec cannot be combined with disk_read_bytes_sec",
        ),
        ({"read_iops_sec_max_length": 9}, r"disk_read_iops_sec_max_length needs"),
    ],
)
def test_bad_qos_specs_name_the_volume_and_key(conf, specs, message):
    info = connection_info("iscsi")
    info["data"]["qos_specs"] = specs
    with pytest.raises(exception.InvalidConnectionInfo, match=message) as err:
        iscsi(conf, info)
    assert "iscsi" in str(err.value) and info["serial"] in str(err.value)


@pytest.mark.parametrize("where", ["top", "data"])
def test_multiattach_is_shareable_in_config_and_facts(conf, where):
    info = connection_info("iscsi")
    (info if where == "top" else info["data"])["multiattach"] = True
    disk = iscsi(conf, info)
    assert disk.config.shareable is True and disk.facts.shareable is True
    assert etree.fromstring(disk.config.to_xml()).find("shareable") is not None


def test_single_attach_is_not_shareable(conf):
    disk = iscsi(conf)
    assert not disk.config.shareable and not disk.facts.shareable


def test_read_only_access_mode(conf):
    info = connection_info("iscsi")
    info["data"]["access_mode"] = "ro"
    disk = iscsi(conf, info)
    assert disk.config.readonly is True
    assert etree.fromstring(disk.config.to_xml()).find("readonly") is not None


def test_unknown_access_mode_is_an_error(conf):
    info = connection_info("iscsi")
    info["data"]["access_mode"] = "wo"
    with pytest.raises(exception.InvalidConnectionInfo, match=r"data.access_mode is 'wo'"):
        iscsi(conf, info)


@pytest.mark.parametrize(("value", "expected"), [(True, "unmap"), (False, None), ("yes", None)])
def test_discard_request_goes_to_facts_not_config(conf, value, expected):
    info = connection_info("iscsi")
    info["data"]["discard"] = value
    disk = iscsi(conf, info)
    assert disk.facts.discard == expected
    # The policy decides driver_discard (it may keep a preallocated disk allocated).
    assert disk.config.driver_discard is None


def test_block_sizes_from_connection_info(conf):
    info = connection_info("iscsi")
    info["data"].update(logical_block_size="512", physical_block_size=4096)
    config = iscsi(conf, info).config
    assert (config.logical_block_size, config.physical_block_size) == (512, 4096)


def test_bus_and_lun_device(conf):
    disk = iscsi(conf, target="sdb", bus="scsi", device="lun")
    xml = etree.fromstring(disk.config.to_xml())
    assert xml.get("device") == "lun" and xml.find("target").get("bus") == "scsi"
    assert disk.facts.bus == "scsi" and disk.facts.name == "sdb"


# Malformed connection_info -------------------------------------------------------


@pytest.mark.parametrize("transport", ["iscsi", "fibre_channel", "local", "nvmeof"])
def test_missing_device_path_names_the_key_and_driver(conf, transport):
    info = connection_info(transport)
    del info["data"]["device_path"]
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        loader.volume_driver(transport)(conf, FakeProbe()).connect(info, "vdb")
    message = str(err.value)
    assert f"Volume driver {transport} " in message and "data.device_path is missing" in message
    assert info["serial"] in message


def test_device_path_that_does_not_exist(make_conf):
    info = connection_info("iscsi")
    probe = FakeProbe()
    probe.missing.add(info["data"]["device_path"])
    with pytest.raises(exception.VolumeDriverError, match=r"does not exist; os-brick"):
        loader.volume_driver("iscsi")(make_conf(), probe).connect(info, "vdb")


def test_device_path_that_is_not_a_block_device(conf, tmp_path):
    regular = tmp_path / "not-a-device"
    regular.write_bytes(b"")
    info = connection_info("iscsi")
    info["data"]["device_path"] = str(regular)
    with pytest.raises(exception.VolumeDriverError, match=r"is not a block device"):
        iscsi(conf, info)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda i: i.pop("data"), r"'data' is missing"),
        (lambda i: i.update(data=["x"]), r"'data' is list"),
        (lambda i: i.update(driver_volume_type="nfs"), r"driver_volume_type is 'nfs'"),
    ],
)
def test_malformed_envelope(conf, mutate, message):
    info = connection_info("iscsi")
    mutate(info)
    with pytest.raises(exception.InvalidConnectionInfo, match=message):
        iscsi(conf, info)


def test_connection_info_that_is_not_a_dict(conf):
    with pytest.raises(exception.InvalidConnectionInfo, match=r"expected a dict, got str"):
        iscsi(conf, "iscsi://nowhere")


@pytest.mark.parametrize("key", ["export", "name"])
def test_nfs_without_export_or_name(conf, key):
    info = connection_info("nfs")
    del info["data"][key]
    with pytest.raises(exception.InvalidConnectionInfo, match=rf"data.{key} is missing.*nfs"):
        loader.volume_driver("nfs")(conf, FakeProbe()).connect(info, "vdb")


def test_nfs_name_cannot_escape_the_share(conf):
    info = connection_info("nfs")
    info["data"]["name"] = "../../etc/shadow"
    with pytest.raises(exception.InvalidConnectionInfo, match=r"inside the share"):
        loader.volume_driver("nfs")(conf, FakeProbe()).connect(info, "vdb")


def test_nfs_file_not_on_the_mounted_share(make_conf, tmp_path):
    conf = make_conf(libvirt={"nfs_mount_point_base": str(tmp_path)})
    with pytest.raises(exception.VolumeDriverError) as err:
        loader.volume_driver("nfs")(conf, FakeProbe()).connect(connection_info("nfs"), "vdb")
    message = str(err.value)
    assert "does not exist" in message and "[libvirt] nfs_mount_point_base" in message
    assert "192.0.2.30:/srv/cinder" in message


def test_nfs_path_that_is_a_directory(conf, tmp_path):
    info = connection_info("nfs")
    info["data"]["device_path"] = str(tmp_path)
    with pytest.raises(exception.VolumeDriverError, match=r"is not a regular file"):
        loader.volume_driver("nfs")(conf, FakeProbe()).connect(info, "vdb")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": None}, r"data.name is missing"),
        ({"ports": ["6789"]}, r"data.hosts has 3 entries but data.ports has 1"),
        ({"hosts": "192.0.2.41"}, r"must be lists"),
        ({"auth_username": None}, r"data.auth_username is missing"),
        ({"secret_uuid": None}, r"\[libvirt\] rbd_secret_uuid is not set"),
        ({"hosts": ["ceph mon 1"], "ports": []}, r"host names or IP addresses"),
    ],
)
def test_malformed_rbd(conf, change, message):
    info = connection_info("rbd")
    info["data"].update(change)
    with pytest.raises(exception.InvalidConnectionInfo, match=message):
        loader.volume_driver("rbd")(conf, FakeProbe()).connect(info, "vdb")


def test_invalid_serial_is_reported(conf):
    info = connection_info("iscsi")
    info["serial"] = "vol<1>"
    with pytest.raises(exception.InvalidConnectionInfo, match=r"serial"):
        iscsi(conf, info)
