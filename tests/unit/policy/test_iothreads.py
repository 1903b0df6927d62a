"""IOThread planning: count, binding, queues and per-queue mapping."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.policy import decide as tuning
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps
from nova_disk_tuning.policy.iothreads import plan_iothreads

HOST = HostCaps((9, 0, 0), (7, 2, 0), True)
MAPPING_HOST = HostCaps((10, 0, 0), (9, 0, 0), True)


def disk(name: str, bus: str = "virtio") -> DiskFacts:
    return DiskFacts(name=name, source_type="file", path=f"/i/{name}", bus=bus)


def test_default_one_iothread_bound(conf):
    plan = plan_iothreads([disk("vda"), disk("vdb")], 2, conf, HOST)
    assert plan.count.value == 1
    assert "[disk_tuning] iothreads=1" in plan.count.reason
    assert [plan.for_disk(n).iothread.value for n in ("vda", "vdb")] == [1, 1]
    assert plan.scsi_controller is None


def test_round_robin_and_cap_to_devices(make_conf):
    plan = plan_iothreads(
        [disk("vda"), disk("vdb")], 1, make_conf(disk_tuning={"iothreads": 4}), HOST
    )
    # No per-queue mapping here: a third and fourth IOThread would be unused.
    assert plan.count.value == 2
    assert "capped at 2: only 2 device(s)" in plan.count.reason
    assert plan.for_disk("vda").iothread.value == 1
    assert plan.for_disk("vdb").iothread.value == 2
    assert "round-robin" in plan.for_disk("vdb").iothread.reason


def test_round_robin_wraps(make_conf):
    disks = [disk(f"vd{c}") for c in "abcde"]
    plan = plan_iothreads(disks, 1, make_conf(disk_tuning={"iothreads": 2}), HOST)
    assert [plan.for_disk(d.name).iothread.value for d in disks] == [1, 2, 1, 2, 1]


def test_extra_spec_overrides_config(make_conf):
    disks = [disk("vda"), disk("vdb"), disk("vdc")]
    conf = make_conf(disk_tuning={"iothreads": 1})
    plan = plan_iothreads(disks, 1, conf, HOST, {"hw:disk_iothreads": " 3 "})
    assert plan.count.value == 3
    assert "flavor extra spec hw:disk_iothreads=3" in plan.count.reason
    assert [plan.for_disk(d.name).iothread.value for d in disks] == [1, 2, 3]


@pytest.mark.parametrize("value", ["-1", "two", "1.5", ""])
def test_extra_spec_validated(conf, value):
    with pytest.raises(exception.InvalidFlavorExtraSpec, match="hw:disk_iothreads") as info:
        plan_iothreads([disk("vda")], 1, conf, HOST, {"hw:disk_iothreads": value})
    assert "non-negative integer" in str(info.value)


def test_extra_spec_zero_disables(conf):
    plan = plan_iothreads([disk("vda")], 1, conf, HOST, {"hw:disk_iothreads": "0"})
    assert plan.count.value is None
    assert plan.for_disk("vda").iothread.value is None
    assert "main loop" in plan.for_disk("vda").iothread.reason


def test_no_virtio_disk_defines_no_iothread(conf):
    # Nova 33 would define <iothreads>1</iothreads> and bind nothing.
    plan = plan_iothreads([disk("sda", bus="sata")], 1, conf, HOST)
    assert plan.count.value is None
    assert "no virtio disk or virtio-scsi controller" in plan.count.reason
    assert plan.for_disk("sda").iothread.value is None
    assert "bus sata" in plan.for_disk("sda").iothread.reason
    assert plan.for_disk("sda").queues.value is None


def test_scsi_controller_owns_iothread_and_queues(make_conf):
    disks = [disk("vda"), disk("sda", bus="scsi"), disk("sdb", bus="scsi")]
    plan = plan_iothreads(disks, 4, make_conf(disk_tuning={"iothreads": 2}), HOST)
    assert plan.count.value == 2
    assert plan.for_disk("vda").iothread.value == 1
    assert plan.scsi_controller.iothread.value == 2
    assert plan.scsi_controller.queues.value == 4
    assert "2 disk(s)" in plan.scsi_controller.iothread.reason
    for name in ("sda", "sdb"):
        assert plan.for_disk(name).iothread.value is None
        assert (
            "virtio-scsi controller (IOThread 2, 4 queues)" in plan.for_disk(name).iothread.reason
        )
    controller = SimpleNamespace(model="virtio-scsi", driver_iothread=None, driver_queues=None)
    plan.apply_to_controller(controller)
    assert (controller.driver_iothread, controller.driver_queues) == (2, 4)


@pytest.mark.parametrize(("configured", "vcpus", "expected", "reason"), [
    (0, 4, 4, "one queue per vCPU (4"),
    (2, 4, 2, "disk_queues=2"),
])  # fmt: skip
def test_queues(make_conf, configured, vcpus, expected, reason):
    conf = make_conf(disk_tuning={"disk_queues": configured})
    queues = plan_iothreads([disk("vda")], vcpus, conf, HOST).for_disk("vda").queues
    assert queues.value == expected
    assert reason in queues.reason


def test_per_queue_mapping_where_supported(make_conf):
    conf = make_conf(disk_tuning={"iothreads": 2})
    plan = plan_iothreads([disk("vda"), disk("vdb")], 4, conf, MAPPING_HOST)
    vda, vdb = plan.for_disk("vda"), plan.for_disk("vdb")
    assert vda.iothread.value is None
    assert vda.iothread_queues.value == {1: [0, 2], 2: [1, 3]}
    # Each disk starts on another IOThread so queue 0s do not pile up.
    assert vdb.iothread_queues.value == {1: [1, 3], 2: [0, 2]}
    assert "4 queue(s) spread over 2 IOThreads" in vda.iothread_queues.reason


def test_mapping_is_not_capped_by_device_count(make_conf):
    conf = make_conf(disk_tuning={"iothreads": 3})
    plan = plan_iothreads([disk("vda")], 3, conf, MAPPING_HOST)
    assert plan.count.value == 3
    assert plan.for_disk("vda").iothread_queues.value == {1: [0], 2: [1], 3: [2]}


@pytest.mark.parametrize(("host", "overrides", "reason"), [
    (HOST, {"iothreads": 2}, "needs libvirt >= 10.0 and QEMU >= 9.0 (libvirt 9.0.0, QEMU 7.2.0)"),
    (MAPPING_HOST, {"iothreads": 2, "iothread_queue_mapping": False}, "mapping off"),
    (MAPPING_HOST, {"iothreads": 1}, "at least two IOThreads"),
])  # fmt: skip
def test_no_mapping_and_why(make_conf, host, overrides, reason):
    plan = plan_iothreads([disk("vda")], 4, make_conf(disk_tuning=overrides), host)
    binding = plan.for_disk("vda")
    assert binding.iothread.value == 1
    assert binding.iothread_queues.value is None
    assert reason in binding.iothread_queues.reason


def test_vcpus_must_be_positive(conf):
    with pytest.raises(exception.InvalidConfig, match="at least one vCPU"):
        plan_iothreads([disk("vda")], 0, conf, HOST)


def test_tune_guest_merges_the_plan(make_conf):
    conf = make_conf(disk_tuning={"iothreads": 2})
    result = tuning.tune_guest([disk("vda"), disk("vdb"), disk("sda", "scsi")], HOST, conf, 2)
    assert result.disk("vdb").iothread.value == 2
    assert result.disk("vdb").queues.value == 2
    assert result.disk("sda").iothread.value is None
    guest = SimpleNamespace(
        iothreads=None,
        devices=[
            SimpleNamespace(target_dev="vdb"),
            SimpleNamespace(model="virtio-scsi", driver_iothread=None, driver_queues=None),
        ],
    )
    result.apply_to_guest(guest)
    assert guest.iothreads == 2
    assert guest.devices[0].driver_iothread == 2
    assert guest.devices[1].driver_iothread == 1
    assert guest.devices[1].driver_queues == 2
