"""The tuning policy's decision table, one row per case, values AND reasons."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.common.versions import version_from_int
from nova_disk_tuning.policy import decide as tuning
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps

GIB = 1 << 30
# Debian 12: libvirt 9.0, QEMU 7.2, io_uring allowed.
HOST = HostCaps((9, 0, 0), (7, 2, 0), True, "kernel.io_uring_disabled=0")
HOST_95 = HostCaps((9, 5, 0), (8, 0, 0), True)
OLD_HOST = HostCaps((6, 0, 0), (4, 2, 0), True)
NO_URING_KERNEL = HostCaps((9, 0, 0), (7, 2, 0), False, "kernel.io_uring_disabled=2")
TEST_DRIVER = HostCaps((9, 0, 0), None, True)


def raw_file(**changes) -> DiskFacts:
    """A fully allocated raw file where O_DIRECT works; rows change what they test."""
    base = DiskFacts(
        name="vda",
        source_type="file",
        format="raw",
        path="/var/lib/nova/instances/i/disk",
        size=GIB,
        allocated=GIB,
        direct_io=True,
    )
    return base.replace(**changes)


def block(**changes) -> DiskFacts:
    return DiskFacts(name="vdb", source_type="block", path="/dev/sdb", direct_io=True).replace(
        **changes
    )


def network(**changes) -> DiskFacts:
    return DiskFacts(name="vdc", source_type="network", format="raw", driver="rbd").replace(
        **changes
    )


SPARSE = {"allocated": 4096}

# (id, facts, host, conf overrides, {setting: (value, substring of the reason)})
ROWS = [
    (
        "raw-fully-allocated-direct",
        raw_file(),
        HOST,
        {},
        {"cache": ("none", "O_DIRECT works"), "io": ("native", "fully allocated")},
    ),
    (
        "raw-sparse",
        raw_file(**SPARSE),
        HOST,
        {},
        {"cache": ("none", "O_DIRECT"), "io": ("threads", "not fully allocated")},
    ),
    (
        # A sparse qcow2 file never gets native; io_uring where allowed, else threads.
        "sparse-qcow2-io-uring-kernel-disabled",
        raw_file(format="qcow2", **SPARSE),
        NO_URING_KERNEL,
        {},
        {"io": ("threads", "io_uring not used (kernel: kernel.io_uring_disabled=2)")},
    ),
    (
        "sparse-qcow2-io-uring-old-versions",
        raw_file(format="qcow2", **SPARSE),
        OLD_HOST,
        {},
        {"io": ("threads", "libvirt 6.0.0 < 6.3")},
    ),
    (
        "sparse-qcow2-on-cifs-denylisted",
        raw_file(format="qcow2", storage_kind="cifs", **SPARSE),
        HOST,
        {},
        {"io": ("threads", "io_uring not used (cifs storage")},
    ),
    (
        # Nova: native for every disk when space is on, decided from config.
        "space-configured-but-fs-cannot-fallocate",
        raw_file(allocated=0),
        HOST,
        {"DEFAULT": {"preallocate_images": "space"}},
        {"io": ("threads", "0 B of 1.0 GiB allocated")},
    ),
    (
        "space-configured-reason-says-it-did-not-take-effect",
        raw_file(allocated=0),
        HOST,
        {"DEFAULT": {"preallocate_images": "space"}},
        {"io": ("threads", "preallocate_images=space did not take effect")},
    ),
    (
        "space-configured-but-allocation-short",
        raw_file(allocated=GIB // 2),
        HOST,
        {"DEFAULT": {"preallocate_images": "space"}},
        {"io": ("threads", "is not fully allocated (512.0 MiB of 1.0 GiB allocated)")},
    ),
    (
        "never-preallocated-unknown-allocation",
        raw_file(size=None, allocated=None),
        HOST,
        {"DEFAULT": {"preallocate_images": "space"}},
        {"io": ("threads", "allocation of /var/lib/nova/instances/i/disk not measured")},
    ),
    (
        "fully_allocated-verdict-wins-over-numbers",
        raw_file(fully_allocated=False),
        HOST,
        {},
        {"io": ("threads", "not fully allocated")},
    ),
    (
        "qcow2-allocation-covers-virtual-size",
        raw_file(format="qcow2", size=GIB, allocated=GIB + 65536),
        HOST,
        {},
        {"io": ("native", "host allocation covers the virtual size")},
    ),
    (
        "qcow2-overlay-sparse",
        raw_file(format="qcow2", allocated=196608, backing_file="/b/base"),
        HOST,
        {},
        {"io": ("io_uring", "qcow2 allocating on write: io_uring (in the guest 1.01-1.43x")},
    ),
    (
        "qcow2-overlay-sparse-space-did-not-take-effect",
        raw_file(format="qcow2", allocated=196608, backing_file="/b/base"),
        HOST,
        {"DEFAULT": {"preallocate_images": "space"}},
        {"io": ("io_uring", "preallocate_images=space did not take effect")},
    ),
    (
        "no-o-direct",
        raw_file(direct_io=False),
        HOST,
        {},
        {
            "cache": ("writeback", "O_DIRECT does not work"),
            "io": ("threads", "cache writeback is not O_DIRECT"),
        },
    ),
    (
        "o-direct-not-measured-file",
        raw_file(direct_io=None),
        HOST,
        {},
        {"cache": ("writeback", "not measured"), "io": ("threads", "not O_DIRECT")},
    ),
    (
        "forced-native-with-writeback-demoted",
        raw_file(),
        HOST,
        {"disk_tuning": {"aio_mode": "native"}, "libvirt": {"disk_cachemodes": ["file=writeback"]}},
        {
            "cache": ("writeback", "disk_cachemodes file=writeback"),
            "io": ("threads", "aio_mode=native demoted to threads: cache writeback"),
        },
    ),
    (
        "forced-native-on-sparse-file",
        raw_file(**SPARSE),
        HOST,
        {"disk_tuning": {"aio_mode": "native"}},
        {"io": ("native", "forced although")},
    ),
    (
        "forced-native-directsync",
        raw_file(**SPARSE),
        HOST,
        {
            "disk_tuning": {"aio_mode": "native"},
            "libvirt": {"disk_cachemodes": ["file=directsync"]},
        },
        {"cache": ("directsync", "disk_cachemodes"), "io": ("native", "aio_mode=native")},
    ),
    (
        "forced-threads",
        raw_file(),
        HOST,
        {"disk_tuning": {"aio_mode": "threads"}},
        {"io": ("threads", "aio_mode=threads")},
    ),
    (
        "aio-default-emits-nothing",
        raw_file(),
        HOST,
        {"disk_tuning": {"aio_mode": "default"}},
        {"io": (None, "aio_mode=default")},
    ),
    (
        "network-disk-no-io",
        network(),
        HOST,
        {"disk_tuning": {"aio_mode": "native"}},
        {"io": (None, "network disk"), "cache": ("none", "network disk")},
    ),
    (
        "shareable-beats-disk-cachemodes",
        raw_file(shareable=True),
        HOST,
        {"libvirt": {"disk_cachemodes": ["file=writeback"]}},
        {"cache": ("none", "shareable"), "io": ("native", "fully allocated")},
    ),
    (
        "cachemodes-invalid-ignored-last-wins",
        raw_file(),
        HOST,
        {
            "libvirt": {
                "disk_cachemodes": [
                    "file=bogus",
                    "file=writethrough",
                    "nonsense",
                    "tape=none",
                    "file=unsafe",
                ]
            }
        },
        {"cache": ("unsafe", "file=unsafe"), "io": ("threads", "cache unsafe is not O_DIRECT")},
    ),
    (
        "cachemodes-none-without-o-direct",
        raw_file(direct_io=False),
        HOST,
        {"libvirt": {"disk_cachemodes": ["file=none"]}},
        {"cache": ("writeback", "needs O_DIRECT, which does not work")},
    ),
    (
        "cachemodes-other-source-type-unused",
        raw_file(),
        HOST,
        {"libvirt": {"disk_cachemodes": ["block=writeback"]}},
        {"cache": ("none", "O_DIRECT works")},
    ),
    (
        "block-device-native",
        block(),
        HOST,
        {},
        {"cache": ("none", "O_DIRECT works"), "io": ("native", "block device")},
    ),
    (
        "io-uring-allowed",
        raw_file(**SPARSE),
        HOST,
        {"disk_tuning": {"aio_mode": "io_uring"}},
        {"io": ("io_uring", "aio_mode=io_uring: libvirt 9.0.0, QEMU 7.2.0")},
    ),
    (
        "io-uring-with-buffered-cache",
        raw_file(direct_io=False),
        HOST,
        {"disk_tuning": {"aio_mode": "io_uring"}},
        {"cache": ("writeback", "O_DIRECT"), "io": ("io_uring", "aio_mode=io_uring")},
    ),
    (
        "io-uring-denied-on-lvm",
        block(storage_kind="lvm"),
        HOST,
        {"disk_tuning": {"aio_mode": "io_uring"}},
        {"io": ("native", "lvm storage")},
    ),
    (
        "io-uring-denied-on-cifs-sparse",
        raw_file(storage_kind="cifs", **SPARSE),
        HOST,
        {"disk_tuning": {"aio_mode": "io_uring"}},
        {"io": ("threads", "cifs storage")},
    ),
    (
        "io-uring-denied-krbd-buffered",
        block(storage_kind="krbd"),
        HOST,
        {
            "disk_tuning": {"aio_mode": "io_uring"},
            "libvirt": {"disk_cachemodes": ["block=writeback"]},
        },
        {"io": ("threads", "krbd with non-direct cache writeback")},
    ),
    (
        "io-uring-krbd-direct-allowed",
        block(storage_kind="krbd"),
        HOST,
        {"disk_tuning": {"aio_mode": "io_uring"}},
        {"io": ("io_uring", "aio_mode=io_uring")},
    ),
    (
        "io-uring-old-versions",
        raw_file(),
        OLD_HOST,
        {"disk_tuning": {"aio_mode": "io_uring"}},
        {"io": ("native", "libvirt 6.0.0 < 6.3, QEMU 4.2.0 < 5.0")},
    ),
    (
        "io-uring-kernel-disabled",
        raw_file(**SPARSE),
        NO_URING_KERNEL,
        {"disk_tuning": {"aio_mode": "io_uring"}},
        {"io": ("threads", "kernel.io_uring_disabled=2")},
    ),
    (
        "io-uring-qemu-unknown",
        raw_file(),
        TEST_DRIVER,
        {"disk_tuning": {"aio_mode": "io_uring"}},
        {"io": ("native", "QEMU version unknown")},
    ),
    (
        "io-uring-network-disk",
        network(),
        HOST,
        {"disk_tuning": {"aio_mode": "io_uring"}},
        {"io": (None, "network disk")},
    ),
    (
        "volume-iscsi-hint-native",
        block(is_volume=True, driver="iscsi", aio_hint="native", direct_io=None),
        HOST,
        {},
        {"cache": ("none", "block device"), "io": ("native", "volume driver iscsi prefers native")},
    ),
    (
        "volume-nfs-hint-native-sparse",
        raw_file(is_volume=True, driver="nfs", aio_hint="native", storage_kind="nfs", **SPARSE),
        HOST,
        {},
        {"io": ("threads", "nfs prefers native, but /var/lib/nova/instances/i/disk is not fully")},
    ),
    (
        # The io_uring rule is for the backends' local qcow2 files: a volume
        # (measured nowhere) keeps threads.
        "volume-nfs-hint-native-sparse-qcow2",
        raw_file(
            is_volume=True,
            driver="nfs",
            aio_hint="native",
            storage_kind="nfs",
            format="qcow2",
            **SPARSE,
        ),
        HOST,
        {},
        {"io": ("threads", "nfs prefers native, but")},
    ),
    (
        "volume-nfs-hint-native-unmeasured",
        raw_file(is_volume=True, driver="nfs", aio_hint="native", size=None, allocated=None),
        HOST,
        {},
        {"io": ("native", "nfs prefers native; allocation")},
    ),
    (
        "volume-hint-native-buffered-cache",
        block(is_volume=True, driver="fibre_channel", aio_hint="native"),
        HOST,
        {"libvirt": {"disk_cachemodes": ["block=writeback"]}},
        {"io": ("threads", "prefers native, but cache writeback is not O_DIRECT")},
    ),
    (
        "volume-hint-dropped-by-use-default",
        raw_file(is_volume=True, driver="nfs", aio_hint="native", size=None, allocated=None),
        HOST,
        {"libvirt": {"use_default_aio_mode_for_volumes": True}},
        {"io": ("threads", "ignored ([libvirt] use_default_aio_mode_for_volumes)")},
    ),
    (
        "volume-hint-threads",
        block(is_volume=True, driver="custom", aio_hint="threads"),
        HOST,
        {},
        {"io": ("threads", "custom prefers threads")},
    ),
    (
        "volume-rbd-network",
        network(is_volume=True, driver="rbd"),
        HOST,
        {},
        {"io": (None, "io has no effect")},
    ),
    (
        "discard-unset",
        raw_file(),
        HOST,
        {},
        {"discard": (None, "hw_disk_discard unset"), "discard_no_unref": (None, "not unmap")},
    ),
    (
        "discard-ignore",
        raw_file(),
        HOST,
        {"libvirt": {"hw_disk_discard": "ignore"}},
        {"discard": ("ignore", "hw_disk_discard=ignore")},
    ),
    (
        "discard-unmap-sparse",
        raw_file(**SPARSE),
        HOST,
        {"libvirt": {"hw_disk_discard": "unmap"}},
        {"discard": ("unmap", "frees host space"), "discard_no_unref": (None, "not preallocated")},
    ),
    (
        "discard-unmap-preallocated-qcow2-no-unref",
        raw_file(format="qcow2", allocated=2 * GIB),
        HOST_95,
        {"libvirt": {"hw_disk_discard": "unmap"}},
        {
            "discard": ("unmap", "discard_no_unref keeps"),
            "discard_no_unref": ("on", "keeps them"),
        },
    ),
    (
        "discard-unmap-preallocated-qcow2-old-libvirt",
        raw_file(format="qcow2", allocated=2 * GIB),
        HOST,
        {"libvirt": {"hw_disk_discard": "unmap"}},
        {
            "discard": ("unmap", "gave up keeping this preallocated disk allocated"),
            "discard_no_unref": (None, "libvirt 9.0.0 < 9.5"),
        },
    ),
    (
        "discard-unmap-preallocated-qcow2-option-off",
        raw_file(format="qcow2", allocated=2 * GIB),
        HOST_95,
        {"libvirt": {"hw_disk_discard": "unmap"}, "disk_tuning": {"discard_no_unref": False}},
        {"discard_no_unref": (None, "[disk_tuning] discard_no_unref=false")},
    ),
    (
        "discard-unmap-native-raw",
        raw_file(),
        HOST_95,
        {"libvirt": {"hw_disk_discard": "unmap"}},
        {
            "discard": ("unmap", "native AIO unsafe"),
            "discard_no_unref": (None, "format raw (discard_no_unref is qcow2 only)"),
        },
    ),
    (
        # Preallocated is measured: a full file without O_DIRECT (threads, so
        # no native to protect) is still one that guest TRIM makes sparse.
        "discard-unmap-full-raw-without-o-direct",
        raw_file(direct_io=False),
        HOST_95,
        {"libvirt": {"hw_disk_discard": "unmap"}},
        {
            "io": ("threads", "not O_DIRECT"),
            "discard": ("unmap", "gave up keeping this preallocated disk allocated"),
        },
    ),
    (
        "discard-from-volume",
        block(is_volume=True, driver="iscsi", discard="unmap"),
        HOST,
        {},
        {"discard": ("unmap", "the volume requests discard=unmap")},
    ),
    (
        "detect-zeroes-unmap-lowered",
        raw_file(),
        HOST,
        {"disk_tuning": {"detect_zeroes": "unmap"}},
        {"detect_zeroes": ("on", "lowered to on")},
    ),
    (
        "detect-zeroes-unmap-kept",
        raw_file(**SPARSE),
        HOST,
        {"disk_tuning": {"detect_zeroes": "unmap"}, "libvirt": {"hw_disk_discard": "unmap"}},
        {"detect_zeroes": ("unmap", "detect_zeroes=unmap")},
    ),
    (
        "detect-zeroes-unset",
        raw_file(),
        HOST,
        {},
        {"detect_zeroes": (None, "QEMU's default (off)")},
    ),
]


@pytest.mark.parametrize(
    ("facts", "host", "overrides", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_decision_table(make_conf, facts, host, overrides, expected):
    result = tuning.decide(facts, host, make_conf(**overrides))
    for setting, (value, reason) in expected.items():
        decision = getattr(result, setting)
        assert decision.value == value, (setting, decision)
        assert reason in decision.reason, (setting, decision)


def test_refused_io_uring_is_not_offered_again_for_a_sparse_file(make_conf):
    # aio_mode=io_uring on a denylisted sparse file: one refusal, then threads.
    conf = make_conf(disk_tuning={"aio_mode": "io_uring"})
    io = tuning.decide(raw_file(format="qcow2", storage_kind="cifs", **SPARSE), HOST, conf).io
    assert io.value == "threads" and io.reason.count("io_uring not used") == 1, io


def test_demotion_is_logged(make_conf, caplog):
    conf = make_conf(
        disk_tuning={"aio_mode": "native"}, libvirt={"disk_cachemodes": ["file=writeback"]}
    )
    with caplog.at_level(logging.WARNING):
        tuning.decide(raw_file(), HOST, conf)
    assert any("demoted to threads" in r.getMessage() for r in caplog.records)


def test_invalid_cachemode_entries_are_reported(caplog):
    with caplog.at_level(logging.WARNING):
        modes = tuning.parse_cachemodes(["file=bogus", "block = writeback", "network"])
    assert modes == {"block": "writeback"}
    messages = [r.getMessage() for r in caplog.records]
    assert any("'file=bogus'" in m for m in messages)
    assert any("'network'" in m for m in messages)


def test_decide_without_plan_leaves_iothreads_unset(conf):
    result = tuning.decide(raw_file(), HOST, conf)
    assert result.iothread.value is None and result.queues.value is None
    assert "per guest" in result.iothread.reason


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"source_type": "nbd"}, "source_type 'nbd'"),
        ({"aio_hint": "fast"}, "aio_hint 'fast'"),
        ({"discard": True}, "discard True"),
        ({"path": None}, "needs a path"),
    ],
)
def test_facts_are_validated(changes, message):
    with pytest.raises(exception.InvalidDiskConfig, match=message):
        raw_file(**changes)


def test_host_caps_version_gates():
    assert version_from_int(9_000_000) == (9, 0, 0)
    assert version_from_int(10_002_003) == (10, 2, 3)
    assert HOST.io_uring and not HOST.discard_no_unref and not HOST.iothread_queue_mapping
    assert HOST_95.discard_no_unref
    assert HostCaps((10, 0, 0), (9, 0, 0), True).iothread_queue_mapping
    assert not HostCaps((10, 0, 0), (8, 2, 0), True).iothread_queue_mapping
    assert not HostCaps((6, 3, 0), (4, 2, 1), True).io_uring
    assert HostCaps((6, 3, 0), (5, 0, 0), True).io_uring
    assert not TEST_DRIVER.io_uring and not NO_URING_KERNEL.io_uring


def test_apply_sets_driver_attributes(make_conf):
    conf = make_conf(libvirt={"hw_disk_discard": "unmap"})
    result = tuning.tune_guest([raw_file(format="qcow2")], HOST_95, conf, 2)
    disk = SimpleNamespace(driver_io="threads")
    result.disk("vda").apply(disk)
    assert disk.driver_cache == "none"
    assert disk.driver_io == "native"
    assert disk.driver_discard == "unmap"
    assert disk.driver_discard_no_unref == "on"
    assert disk.driver_detect_zeroes is None
    assert disk.driver_iothread == 1
    assert disk.driver_iothread_queues is None
    assert disk.driver_queues == 2


def test_apply_renders_with_the_config_objects(make_conf):
    config = pytest.importorskip("nova_disk_tuning.domxml")
    conf = make_conf(disk_tuning={"detect_zeroes": "on"})
    result = tuning.tune_guest([raw_file(), network(bus="sata")], HOST, conf, 1)
    guest = SimpleNamespace(iothreads=None, devices=[])
    disk = config.LibvirtConfigGuestDisk()
    disk.source_type, disk.source_path = "file", "/var/lib/nova/instances/i/disk"
    disk.driver_name, disk.driver_format = "qemu", "raw"
    disk.target_dev, disk.target_bus = "vda", "virtio"
    guest.devices.append(disk)
    result.apply_to_guest(guest)
    assert guest.iothreads == 1
    xml = disk.to_xml()
    for fragment in ('cache="none"', 'io="native"', 'iothread="1"', 'detect_zeroes="on"'):
        assert fragment in xml, xml


def test_tune_guest_rejects_duplicate_names(conf):
    with pytest.raises(exception.InvalidDiskConfig, match="share this name"):
        tuning.tune_guest([raw_file(), raw_file()], HOST, conf, 1)


def test_guest_tuning_unknown_disk(conf):
    result = tuning.tune_guest([raw_file()], HOST, conf, 1)
    with pytest.raises(exception.InvalidDiskConfig, match="known: \\['vda'\\]"):
        result.disk("vdz")


def test_to_dict_is_complete(conf):
    data = tuning.tune_guest([raw_file()], HOST, conf, 1).to_dict()
    disk = data["disks"][0]
    assert disk["disk"] == "vda"
    assert set(disk) - {"disk"} == set(tuning.DiskTuning.ATTRIBUTES)
    assert disk["io"] == {"value": "native", "reason": disk["io"]["reason"]}
    assert data["host"]["libvirt_version"] == "9.0.0"
    assert data["iothreads"]["count"]["value"] == 1
