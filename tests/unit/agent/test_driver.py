"""Unit tests of the compute driver's pieces: guest assembly, the native guard, records."""

from __future__ import annotations

import json
import os
import time

import pytest
from lxml import etree

from nova_disk_tuning import exception
from nova_disk_tuning.agent import assembly as guest_builder
from nova_disk_tuning.agent import instance as instance_mod
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.agent.record import InstanceRecord
from nova_disk_tuning.agent.store import InstanceStore
from nova_disk_tuning.cmd.instances import block_device_info_from_files
from nova_disk_tuning.common import staging
from nova_disk_tuning.domxml import LibvirtConfigGuestDisk
from nova_disk_tuning.domxml.targets import TargetNames as _TargetNames
from nova_disk_tuning.policy import result
from nova_disk_tuning.policy.decide import tune_guest
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps
from nova_disk_tuning.policy.result import GuestTuning

HOST = HostCaps(libvirt_version=(9, 0, 0), qemu_version=(7, 2, 0), kernel_io_uring=False)
GiB = 1 << 30


def disk(name: str, bus: str = "virtio", allocated: int = GiB, direct: bool = True) -> GuestDisk:
    path = f"/srv/instances/u/{name}"
    facts = DiskFacts(
        name=name,
        source_type="file",
        format="qcow2",
        path=path,
        size=GiB,
        allocated=allocated,
        bus=bus,
        direct_io=direct,
    )
    config = LibvirtConfigGuestDisk(
        source_type="file",
        source_path=path,
        driver_name="qemu",
        driver_format="qcow2",
        target_dev=name,
        target_bus=bus,
    )
    return GuestDisk(config, facts, (path,))


def build(conf, disks, **kwargs):
    tuning = tune_guest([d.facts for d in disks], HOST, conf, kwargs.pop("vcpus", 2))
    guest = guest_builder.build_guest(
        conf,
        name="vm",
        uuid="6a1c0d9e-2b3f-4e5a-8c7d-9e0f1a2b3c4d",
        vcpus=2,
        memory_mb=256,
        disks=disks,
        tuning=tuning,
        console_path="/srv/instances/u/console.log",
        **kwargs,
    )
    return etree.fromstring(guest.to_xml().encode()), tuning


def test_guest_has_tuned_disks_iothreads_and_a_file_console(make_conf):
    root, tuning = build(make_conf(), [disk("vda"), disk("vdb", allocated=4096)])
    assert root.get("type") == "kvm"  # [libvirt] virt_type default
    assert root.findtext("iothreads") == "1"
    drivers = [d.find("driver").attrib for d in root.iterfind("devices/disk")]
    assert drivers[0]["io"] == "native" and drivers[0]["cache"] == "none"
    assert drivers[1]["io"] == "threads"  # sparse: 4 KiB of 1 GiB allocated
    assert [d["iothread"] for d in drivers] == ["1", "1"]
    serial = root.find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path") == "/srv/instances/u/console.log"
    assert [b.get("dev") for b in root.iterfind("os/boot")] == ["hd"]
    assert root.find("devices/controller") is None
    assert tuning.disk("vdb").io.value == "threads"


def test_scsi_disks_get_a_virtio_scsi_controller_and_kernel_boot(make_conf):
    conf = make_conf(libvirt={"virt_type": "qemu"})
    root, _ = build(
        conf,
        [disk("sda", bus="scsi")],
        kernel="/k",
        ramdisk="/r",
        cmdline="console=ttyS0",
    )
    assert root.get("type") == "qemu"
    controller = root.find("devices/controller")
    assert controller.attrib == {"type": "scsi", "index": "0", "model": "virtio-scsi"}
    assert controller.find("driver").get("iothread") == "1"
    assert root.find("devices/disk/driver").get("iothread") is None
    assert (root.findtext("os/kernel"), root.findtext("os/initrd")) == ("/k", "/r")
    assert root.findtext("os/cmdline") == "console=ttyS0"
    assert root.find("os/boot") is None


DISK_XML = """<domain type='kvm'><name>vm</name><devices>
<disk type='file' device='disk'><driver name='qemu' {driver}/>
<source file='/srv/d'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""


@pytest.mark.parametrize(
    "driver",
    ["cache='none' io='native'", "cache='directsync' io='native'", "cache='writeback'", ""],
)
def test_native_guard_allows_direct_caches(driver):
    guest_builder.check_native_io(DISK_XML.format(driver=driver))


@pytest.mark.parametrize(
    "driver, shown",
    [
        ("cache='writeback' io='native'", "cache=writeback"),
        ("cache='writethrough' io='native'", "cache=writethrough"),
        ("cache='unsafe' io='native'", "cache=unsafe"),
        ("io='native'", "cache=unset (QEMU default writeback)"),
    ],
)
def test_native_guard_refuses_other_caches(driver, shown):
    with pytest.raises(exception.InvalidDiskConfig) as info:
        guest_builder.check_native_io(DISK_XML.format(driver=driver))
    message = str(info.value)
    assert "vda (/srv/d) of domain vm" in message
    assert shown in message
    assert "QEMU would refuse to start" in message and "io='threads'" in message


def test_native_guard_runs_in_build_guest(make_conf, monkeypatch):
    # Even if the policy were wrong, the builder refuses what QEMU would refuse.
    from nova_disk_tuning.policy.decide import DiskTuning

    monkeypatch.setattr(
        DiskTuning,
        "apply",
        lambda self, cfg: (
            setattr(cfg, "driver_io", "native"),
            setattr(cfg, "driver_cache", "writeback"),
        ),
    )
    with pytest.raises(exception.InvalidDiskConfig, match="native AIO needs"):
        build(make_conf(), [disk("vda")])


def test_target_names_per_bus():
    names = _TargetNames()
    assert [names.next("virtio"), names.next("virtio"), names.next("scsi")] == ["vda", "vdb", "sda"]
    assert names.take("vdd") == "vdd"
    assert names.next("virtio") == "vdc"
    with pytest.raises(exception.InvalidDiskConfig, match="already used"):
        names.take("vda")
    with pytest.raises(exception.InvalidConfig, match="not supported"):
        names.next("floppy")


def test_tuning_survives_a_json_record(make_conf):
    conf = make_conf(disk_tuning={"iothreads": 2})
    _, tuning = build(conf, [disk("vda"), disk("vdb"), disk("sda", bus="scsi")])
    data = json.loads(json.dumps(tuning.to_dict()))
    assert GuestTuning.from_dict(data).to_dict() == tuning.to_dict()
    facts = [disk("vda").facts]
    from dataclasses import asdict

    assert [DiskFacts.from_dict(asdict(f)) for f in facts] == facts


def test_per_queue_mapping_keys_come_back_as_ints():
    data = {"value": {"1": [0, 2], "2": [1]}, "reason": "r"}
    assert result._decision(data).value == {1: [0, 2], 2: [1]}


def test_image_id_follows_path_size_and_mtime(tmp_path):
    image = tmp_path / "img"
    image.write_bytes(b"a")
    first = instance_mod.image_id_for_path(str(image))
    assert instance_mod.image_id_for_path(str(tmp_path / "." / "img")) == first
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert instance_mod.image_id_for_path(str(image)) != first
    with pytest.raises(exception.ImageNotFound):
        instance_mod.image_id_for_path(str(tmp_path / "missing"))


def test_image_id_changes_when_rewritten_with_size_and_mtime_restored(tmp_path):
    image = tmp_path / "img"
    image.write_bytes(b"old content")
    before = os.stat(image)
    first = instance_mod.image_id_for_path(str(image))
    time.sleep(0.01)  # a coarse ctime clock must move: the rewrite is later
    image.write_bytes(b"new content")  # same size, as cp -p or rsync -t leave it
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(image).st_mtime_ns == before.st_mtime_ns
    assert instance_mod.image_id_for_path(str(image)) != first


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vcpus": 0}, "vcpus must be at least 1"),
        ({"memory_mb": 0}, "memory_mb must be at least 1"),
        ({"root_gb": -1}, "root_gb cannot be negative"),
        ({"swap_mb": -5}, "swap_mb cannot be negative"),
    ],
)
def test_flavor_validation(kwargs, match):
    with pytest.raises(exception.InvalidConfig, match=match):
        instance_mod.Flavor(**kwargs)


def test_instance_and_image_validation():
    with pytest.raises(exception.InvalidConfig, match="instance name"):
        instance_mod.Instance("bad name/")
    with pytest.raises(exception.InvalidConfig, match="is not a UUID"):
        instance_mod.Instance("vm", "nope")
    assert instance_mod.Instance("vm", "6A1C0D9E2B3F4E5A8C7D9E0F1A2B3C4D").uuid == (
        "6a1c0d9e-2b3f-4e5a-8c7d-9e0f1a2b3c4d"
    )
    with pytest.raises(exception.InvalidConfig, match="ramdisk needs a kernel"):
        instance_mod.ImageMeta(id="i", source="/i", ramdisk="/r")
    assert instance_mod.ImageMeta(id="i", source="/i").disk_bus == "virtio"


def test_store_finds_records_by_name_and_shows_broken_ones(make_conf):
    conf = make_conf()
    store = InstanceStore(conf)
    uuid = "6a1c0d9e-2b3f-4e5a-8c7d-9e0f1a2b3c4d"
    os.makedirs(store.instance_dir(uuid))
    store.write(InstanceRecord(name="vm", uuid=uuid), "<domain/>")
    os.makedirs(os.path.join(store.root, "_base"))
    junk = os.path.join(store.root, "0b7e2c1d-0000-4000-8000-000000000000")
    os.makedirs(junk)
    with open(os.path.join(junk, "instance.json"), "w") as handle:
        handle.write("{not json")
    os.makedirs(os.path.join(store.root, "1c2d3e4f-0000-4000-8000-000000000000"))  # not ours
    # A corrupt record is listed under its uuid (so it can be destroyed);
    # a directory without a record (Nova's own, say) is not ours to show.
    records = {r.name: r for r in store.records()}
    assert sorted(records) == ["0b7e2c1d-0000-4000-8000-000000000000", "vm"]
    broken = records["0b7e2c1d-0000-4000-8000-000000000000"]
    assert broken.state == "broken" and "not JSON" in (broken.problem or "")
    assert store.find("vm").uuid == uuid
    assert store.read_xml(uuid) == "<domain/>"
    with pytest.raises(exception.InstanceNotFound, match="nova-disk-tuning list"):
        store.find("other")
    assert not [n for n in os.listdir(store.instance_dir(uuid)) if n.endswith(".tmp")]


def test_block_device_info_from_files(tmp_path):
    plain = tmp_path / "a.json"
    plain.write_text(json.dumps({"driver_volume_type": "local", "data": {}}))
    mapping = tmp_path / "b.json"
    mapping.write_text(
        json.dumps({"connection_info": {"driver_volume_type": "nfs"}, "mount_device": "/dev/vdf"})
    )
    info = block_device_info_from_files([str(plain), str(mapping)])
    assert info["block_device_mapping"][0] == {
        "connection_info": {"driver_volume_type": "local", "data": {}}
    }
    assert info["block_device_mapping"][1]["mount_device"] == "/dev/vdf"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(exception.InvalidConfig, match="is not JSON"):
        block_device_info_from_files([str(tmp_path / "bad.json")])
    with pytest.raises(exception.InvalidConfig, match="cannot read"):
        block_device_info_from_files([str(tmp_path / "none.json")])


def test_cache_backends_and_volume_drivers_share_one_probe(conf, tmp_path):
    """Capabilities are probed once per driver, not once per disk or per helper object."""
    from nova_disk_tuning.agent.driver import LibvirtDriver

    driver = LibvirtDriver(conf)
    assert driver.image_cache.qemu_img is driver.qemu_img
    assert driver.qemu_img.probe is driver.probe
    for name in ("flat", "qcow2"):
        backend = driver.backend(name)
        assert backend.probe is driver.probe
        assert backend.qemu_img is driver.qemu_img
        assert backend.zeroer._probe is driver.probe


def _sweep_before_first_lock(monkeypatch, root: str) -> list[str]:
    """Sweep ``root`` in the moment between a claim's lock file and its lock.

    That is where a concurrent spawn's sweep found a lock nobody held yet
    (16 concurrent spawns, ENOENT writing the record). Returns the stages
    that existed when the sweep ran.
    """
    import fcntl as real_fcntl

    seen: list[str] = []
    real_flock = real_fcntl.flock

    def flock(fd, operation):
        if operation == real_fcntl.LOCK_EX and not seen:
            seen.extend(e for e in os.listdir(root) if staging.is_stage(e))
            staging.sweep(root)
        return real_flock(fd, operation)

    monkeypatch.setattr(staging.fcntl, "flock", flock)
    return seen


def test_a_claim_swept_before_its_lock_is_made_again(make_conf, monkeypatch):
    conf = make_conf()
    store = InstanceStore(conf)
    store.check_root()
    swept = _sweep_before_first_lock(monkeypatch, store.root)
    uuid = "7d2e1f0a-3b4c-4d5e-8f6a-7b8c9d0e1f2a"
    claim = store.claim(InstanceRecord(name="vm", uuid=uuid))
    try:
        assert len(swept) == 1  # the first stage was there, unlocked, and swept
        assert not os.path.exists(os.path.join(store.root, swept[0]))
        assert store.read(uuid) is not None and store.owner_alive(uuid)
        assert not [e for e in os.listdir(store.root) if staging.is_stage(e)]
    finally:
        claim.release()
    assert not store.owner_alive(uuid)


def test_a_claim_sweeps_dead_claims_and_leaves_a_live_one(make_conf):
    store = InstanceStore(make_conf())
    store.check_root()
    alive = store.claim(InstanceRecord(name="a", uuid="1d2e1f0a-3b4c-4d5e-8f6a-7b8c9d0e1f2a"))
    dead = os.path.join(
        store.root, f".2d2e1f0a-3b4c-4d5e-8f6a-7b8c9d0e1f2a{staging.MARK}{'0' * 16}"
    )
    os.makedirs(dead)
    for name in (staging.LOCK, "instance.json"):
        open(os.path.join(dead, name), "w").close()  # killed before its rename
    try:
        store.claim(InstanceRecord(name="b", uuid="3d2e1f0a-3b4c-4d5e-8f6a-7b8c9d0e1f2a")).release()
        assert not os.path.exists(dead)
        assert store.owner_alive(alive.record.uuid)
        assert sorted(r.name for r in store.records()) == ["a", "b"]
    finally:
        alive.release()
