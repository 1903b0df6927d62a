"""Driver facts -> tuning.decide: the hint is honoured, or dropped by
``[libvirt] use_default_aio_mode_for_volumes``; the policy, not the driver, decides."""

from __future__ import annotations

import pytest

from nova_disk_tuning.agent import loader
from nova_disk_tuning.policy import decide as tuning
from nova_disk_tuning.policy.facts import HostCaps
from tests.unit.agent.volume.conftest import GIB, FakeProbe, connection_info

# Debian 12: libvirt 9.0, QEMU 7.2, io_uring allowed by the kernel.
HOST = HostCaps((9, 0, 0), (7, 2, 0), True)


def decide(conf, transport, probe=None, info=None, **kwargs):
    driver = loader.volume_driver(transport)(conf, probe or FakeProbe())
    disk = driver.connect(info or connection_info(transport), "vdb", **kwargs)
    return disk, tuning.decide(disk.facts, HOST, conf)


@pytest.fixture(autouse=True)
def _block(as_block_device):
    """Fixture device paths stand for block devices in this module."""


@pytest.mark.parametrize(
    "transport", ["iscsi", "iser", "fibre_channel", "nvmeof", "local", "scaleio", "storpool"]
)
def test_block_volume_hint_is_honoured(conf, transport):
    _, result = decide(conf, transport)
    assert result.cache.value == "none"
    assert result.io.value == "native"
    assert f"volume driver {transport} prefers native" in result.io.reason


def test_use_default_aio_mode_for_volumes_drops_the_hint(make_conf):
    conf = make_conf(libvirt={"use_default_aio_mode_for_volumes": True})
    disk, result = decide(conf, "iscsi")
    # The facts still carry the hint; the policy ignores it and says so.
    assert disk.facts.aio_hint == "native" and disk.facts.is_volume
    assert "ignored ([libvirt] use_default_aio_mode_for_volumes)" in result.io.reason


def test_dropping_the_hint_changes_the_outcome(make_conf):
    """A driver whose hook prefers threads gets threads; with the option set, the
    policy decides from the facts alone (a block device: native)."""
    from nova_disk_tuning.agent.volume.block import ISCSIVolumeDriver

    class ThreadsDriver(ISCSIVolumeDriver):
        def aio_hint(self, connection_info):
            return "threads"

    facts = ThreadsDriver(make_conf(), FakeProbe()).connect(connection_info("iscsi"), "vdb").facts
    honoured = tuning.decide(facts, HOST, make_conf())
    dropped = tuning.decide(
        facts, HOST, make_conf(libvirt={"use_default_aio_mode_for_volumes": True})
    )
    assert (honoured.io.value, dropped.io.value) == ("threads", "native")


def test_nfs_sparse_file_gets_threads_despite_the_hint(make_conf, tmp_path):
    info = connection_info("nfs")
    info["data"]["device_path"] = str(tmp_path / "vol")
    (tmp_path / "vol").write_bytes(b"")
    _, result = decide(make_conf(), "nfs", FakeProbe(size=GIB, allocated=4096), info)
    assert result.io.value == "threads"
    assert "prefers native, but" in result.io.reason and "not fully allocated" in result.io.reason


def test_nfs_fully_allocated_file_gets_native(make_conf, tmp_path):
    info = connection_info("nfs")
    info["data"]["device_path"] = str(tmp_path / "vol")
    (tmp_path / "vol").write_bytes(b"")
    _, result = decide(make_conf(), "nfs", FakeProbe(size=GIB), info)
    assert result.io.value == "native" and result.cache.value == "none"


def test_nfs_without_o_direct_gets_writeback_and_threads(make_conf, tmp_path):
    info = connection_info("nfs")
    info["data"]["device_path"] = str(tmp_path / "vol")
    (tmp_path / "vol").write_bytes(b"")
    _, result = decide(make_conf(), "nfs", FakeProbe(size=GIB, direct_io=False), info)
    assert result.cache.value == "writeback" and result.io.value == "threads"


def test_rbd_gets_no_io_attribute(conf):
    _, result = decide(conf, "rbd")
    assert result.io.value is None and "network disk" in result.io.reason


def test_multiattach_forces_cache_none(make_conf):
    conf = make_conf(libvirt={"disk_cachemodes": ["block=writeback"]})
    info = connection_info("iscsi")
    info["multiattach"] = True
    _, result = decide(conf, "iscsi", info=info)
    assert result.cache.value == "none" and "shareable" in result.cache.reason


def test_volume_discard_request_wins_over_hw_disk_discard(make_conf):
    conf = make_conf(libvirt={"hw_disk_discard": "ignore"})
    _, result = decide(conf, "iscsi")  # the fixture has data.discard true
    assert result.discard.value == "unmap"
    assert "the volume requests discard=unmap" in result.discard.reason
