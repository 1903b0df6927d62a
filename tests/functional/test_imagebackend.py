"""Image backends on real storage: ext4, tmpfs and ext2 on loop devices, real qemu-img.

Each created disk is checked from the outside (``qemu-img info`` and
``compare``, ``st_blocks``, ``blkid``), its DiskFacts against that, and the
tuned disk XML against libvirt's schema (``test:///default`` with
VIR_DOMAIN_DEFINE_VALIDATE).

LVM: this machine has no device-mapper, so ``lvcreate``/``lvremove`` are
emulated by a runner that backs each "logical volume" with a real loop
device linked at ``<dev_dir>/<vg>/<lv>``; qemu-img, the wipe (BLKZEROOUT /
ZERO_RANGE, shred) and mkswap run for real on that device.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree
from oslo_concurrency import processutils

from nova_disk_tuning import domxml as config
from nova_disk_tuning import exception
from nova_disk_tuning.agent import loader
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.agent.imagebackend.lvm import Lvm
from nova_disk_tuning.agent.imagebackend.rbd import Rbd
from nova_disk_tuning.host import Host
from nova_disk_tuning.images.cache import CachedImage
from nova_disk_tuning.policy.decide import tune_guest
from nova_disk_tuning.storage.probe import StorageProbe
from tests.functional.conftest import MiB, requires_root

BASE_SIZE = 8 * MiB
ROOT_SIZE = 24 * MiB
UUID = "6f1c2b9e-3d4a-4c8b-9e0f-1a2b3c4d5e6f"
# Data at these offsets of the base, holes elsewhere: the copy must keep both.
DATA = {
    0: b"\xeb\x63\x90" + b"boot" * 100,
    3 * MiB: os.urandom(65536),
    BASE_SIZE - 4096: b"\x55" * 4096,
}


@pytest.fixture
def libvirt_host(make_conf) -> Iterator[Host]:
    with Host(make_conf(libvirt={"connection_uri": "test:///default"})) as host:
        yield host


def make_base(instances_path: str) -> CachedImage:
    """A raw base image where the image cache keeps it: data and holes."""
    base_dir = os.path.join(instances_path, "_base")
    os.makedirs(base_dir, exist_ok=True)
    path = os.path.join(base_dir, "0" * 40)
    with open(path, "wb") as f:
        f.truncate(BASE_SIZE)
        for offset, data in DATA.items():
            f.seek(offset)
            f.write(data)
    return CachedImage(path=path, format="raw", virtual_size=BASE_SIZE, created=True)


def qemu_info(path: str) -> dict:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", path], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def same_content(path: str, fmt: str, base: CachedImage) -> bool:
    # Without -s, qemu-img compare requires the larger image's tail to read as zeroes.
    argv = ["qemu-img", "compare", "-f", fmt, "-F", base.format, path, base.path]
    return subprocess.run(argv, capture_output=True).returncode == 0


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def define_tuned(host: Host, conf, *disks: GuestDisk) -> etree._Element:
    """Tune the disks, put them in a minimal guest, define it validated; the kept XML."""
    tuning = tune_guest([d.facts for d in disks], host.caps(), conf, vcpus=1)
    guest = config.LibvirtConfigGuest(virt_type="qemu", name="imagebackend", memory=131072)
    for disk in disks:
        guest.add_device(disk.config)
    tuning.apply_to_guest(guest)
    domain = host.get_connection().defineXMLFlags(
        guest.to_xml(), libvirt.VIR_DOMAIN_DEFINE_VALIDATE
    )
    try:
        return etree.fromstring(domain.XMLDesc(0))
    finally:
        domain.undefine()


def driver_of(kept: etree._Element, target: str) -> etree._Element:
    (driver,) = kept.xpath(f"devices/disk[target/@dev='{target}']/driver")
    return driver


def backend_for(make_conf, root: str, backend: str, mode: str, **libvirt_opts):
    conf = make_conf(
        DEFAULT={"instances_path": os.path.join(root, "instances"), "preallocate_images": mode},
        libvirt={"images_type": backend, **libvirt_opts},
    )
    return conf, loader.image_backend(conf)(conf)


# Root disks: flat and qcow2 x none/space/performance x ext4/tmpfs --------------


@requires_root
@pytest.mark.parametrize("filesystem", ["ext4", "tmpfs"], indirect=True)
@pytest.mark.parametrize("mode", ["none", "space", "performance"])
@pytest.mark.parametrize("images_type", ["flat", "qcow2"])
def test_root_disk(filesystem, mode, images_type, make_conf, libvirt_host):
    conf, backend = backend_for(make_conf, filesystem, images_type, mode)
    base = make_base(conf.instances_path)
    instance_dir = os.path.join(conf.instances_path, UUID)

    disk = backend.create_root(instance_dir, "vda", base, ROOT_SIZE)

    path = os.path.join(instance_dir, "disk")
    fmt = "qcow2" if images_type == "qcow2" else "raw"
    info = qemu_info(path)
    assert info["format"] == fmt and info["virtual-size"] == ROOT_SIZE
    if fmt == "qcow2":
        assert info["full-backing-filename"] == base.path
        assert info["backing-filename-format"] == "raw"
        extended_l2 = info["format-specific"]["data"].get("extended-l2", False)
        assert extended_l2 == (mode == "performance")
    else:
        assert "backing-filename" not in info
    assert same_content(path, fmt, base)

    want_full = mode != "none"
    if want_full:
        assert allocated(path) >= ROOT_SIZE
    else:
        assert allocated(path) < BASE_SIZE  # the copy kept the base's holes
    facts = disk.facts
    assert (facts.name, facts.source_type, facts.format, facts.path) == ("vda", "file", fmt, path)
    assert facts.size == ROOT_SIZE and facts.allocated == allocated(path)
    assert facts.fully_allocated is want_full and facts.preallocated is want_full
    assert facts.backing_file == (base.path if fmt == "qcow2" else None)
    assert facts.driver == images_type
    assert facts.direct_io == StorageProbe().supports_direct_io(instance_dir)
    assert disk.created == (path,)
    assert disk.config.source_path == path and disk.config.driver_format == fmt
    assert disk.config.driver_cache is None and disk.config.driver_io is None

    driver = driver_of(define_tuned(libvirt_host, conf, disk), "vda")
    assert driver.get("type") == fmt
    assert driver.get("cache") == ("none" if facts.direct_io else "writeback")
    assert driver.get("io") == ("native" if want_full and facts.direct_io else "threads")

    assert backend.destroy([disk]) == [path]
    assert not os.path.exists(path) and os.path.exists(base.path)


# Blank disks -----------------------------------------------------------------


@pytest.mark.parametrize("images_type", ["flat", "qcow2"])
def test_file_disks_carry_the_measured_storage_kind(tmp_path, make_conf, images_type, monkeypatch):
    """A disk file on CIFS must reach the policy as cifs (io_uring is denied there).

    This machine cannot mount CIFS: the mount table is what is stood in.
    """
    from nova_disk_tuning.storage import probe as probe_mod

    monkeypatch.setattr(probe_mod.mounts, "fs_type", lambda path, dev=None: "cifs")
    conf, backend = backend_for(make_conf, str(tmp_path), images_type, "none")
    base = make_base(conf.instances_path)
    disk = backend.create_root(os.path.join(conf.instances_path, UUID), "vda", base, ROOT_SIZE)
    assert disk.facts.storage_kind == "cifs"


def blkid(path: str, tag: str) -> str:
    argv = ["blkid", "-p", "-o", "value", "-s", tag, path]
    return subprocess.run(argv, capture_output=True, text=True).stdout.strip()


@requires_root
@pytest.mark.parametrize("mode", ["none", "space", "performance"])
def test_flat_blank_disks_are_formatted_then_preallocated(
    filesystem, mode, make_conf, libvirt_host
):
    conf, backend = backend_for(make_conf, filesystem, "flat", mode)
    instance_dir = os.path.join(conf.instances_path, UUID)

    eph = backend.create_blank(instance_dir, "vdb", 16 * MiB, "ephemeral", fs_format="ext4")
    swap = backend.create_blank(instance_dir, "vdc", 8 * MiB, "swap")

    assert eph.facts.path == os.path.join(instance_dir, "disk.eph0")
    assert swap.facts.path == os.path.join(instance_dir, "disk.swap")
    # fallocate after mkfs/mkswap keeps what they wrote.
    assert blkid(eph.facts.path, "TYPE") == "ext4"
    assert blkid(eph.facts.path, "LABEL") == "ephemeral0"
    assert blkid(swap.facts.path, "TYPE") == "swap"
    for disk, size in ((eph, 16 * MiB), (swap, 8 * MiB)):
        assert os.path.getsize(disk.facts.path) == disk.facts.size == size
        assert disk.facts.preallocated is (mode != "none")
        assert (allocated(disk.facts.path) >= size) is (mode != "none")
    kept = define_tuned(libvirt_host, conf, eph, swap)
    assert driver_of(kept, "vdc").get("type") == "raw"
    assert sorted(backend.destroy([eph, swap])) == sorted([eph.facts.path, swap.facts.path])
    assert os.listdir(instance_dir) == []


@requires_root
@pytest.mark.parametrize("filesystem", ["ext4", "tmpfs"], indirect=True)
@pytest.mark.parametrize("mode", ["none", "space", "performance"])
def test_qcow2_blank_disk(filesystem, mode, make_conf, libvirt_host):
    conf, backend = backend_for(make_conf, filesystem, "qcow2", mode)
    instance_dir = os.path.join(conf.instances_path, UUID)

    disk = backend.create_blank(instance_dir, "vdb", 16 * MiB, "ephemeral", index=1)

    path = os.path.join(instance_dir, "disk.eph1")
    info = qemu_info(path)
    assert info["format"] == "qcow2" and info["virtual-size"] == 16 * MiB
    assert "backing-filename" not in info
    assert disk.facts.size == 16 * MiB and disk.facts.backing_file is None
    assert disk.facts.preallocated is (mode != "none")
    assert (allocated(path) >= 16 * MiB) is (mode != "none")
    if mode == "space":
        # KEEP_SIZE: the file's length is still qcow2's own.
        assert os.path.getsize(path) < MiB
    define_tuned(libvirt_host, conf, disk)


# Storage that cannot fallocate, and storage that is full -------------------


@requires_root
@pytest.mark.parametrize("images_type", ["flat", "qcow2"])
def test_space_on_ext2_stays_sparse_and_gets_threads(
    images_type, make_filesystem, make_conf, libvirt_host
):
    """ext2 has no fallocate: the facts say so and the policy does not pick native."""
    root = make_filesystem("ext2").path
    conf, backend = backend_for(make_conf, root, images_type, "space")
    base = make_base(conf.instances_path)

    disk = backend.create_root(os.path.join(conf.instances_path, UUID), "vda", base, ROOT_SIZE)

    fmt = disk.config.driver_format
    assert same_content(disk.facts.path, fmt, base)
    assert allocated(disk.facts.path) < ROOT_SIZE
    assert disk.facts.preallocated is False and disk.facts.fully_allocated is False
    assert any("cannot fallocate" in note for note in disk.notes)
    tuning = tune_guest([disk.facts], libvirt_host.caps(), conf, vcpus=1)
    io = tuning.disk("vda").io
    assert io.value == "threads"
    assert "preallocate_images=space did not take effect" in io.reason
    assert driver_of(define_tuned(libvirt_host, conf, disk), "vda").get("io") == "threads"


@requires_root
@pytest.mark.parametrize(
    ("images_type", "mode"),
    [("flat", "space"), ("flat", "performance"), ("qcow2", "space"), ("qcow2", "performance")],
)
def test_full_file_system_fails_at_once_and_leaves_nothing(
    images_type, mode, small_filesystem, make_conf
):
    conf, backend = backend_for(make_conf, small_filesystem.path, images_type, mode)
    base = make_base(conf.instances_path)
    before = Path(base.path).read_bytes()
    instance_dir = os.path.join(conf.instances_path, UUID)

    with pytest.raises(exception.InsufficientStorage) as info:
        backend.create_root(instance_dir, "vda", base, 64 * MiB)

    assert "disk" in str(info.value) and "Free some space" in str(info.value)
    assert not os.path.exists(instance_dir)  # the disk and the directory made for it
    assert Path(base.path).read_bytes() == before


@requires_root
def test_existing_disk_is_never_overwritten(filesystem, make_conf):
    conf, backend = backend_for(make_conf, filesystem, "flat", "none")
    base = make_base(conf.instances_path)
    instance_dir = os.path.join(conf.instances_path, UUID)
    os.makedirs(instance_dir)
    with open(os.path.join(instance_dir, "disk"), "wb") as f:
        f.write(b"the guest's data")

    with pytest.raises(exception.StorageError, match="already exists"):
        backend.create_root(instance_dir, "vda", base)

    with open(os.path.join(instance_dir, "disk"), "rb") as f:
        assert f.read() == b"the guest's data"


def test_destroy_never_removes_the_cached_base(tmp_path, make_conf):
    conf, backend = backend_for(make_conf, str(tmp_path), "qcow2", "none")
    base = make_base(conf.instances_path)
    disk = backend.create_root(os.path.join(conf.instances_path, UUID), "vda", base)
    assert backend.destroy([base.path, disk, disk.facts.path]) == [disk.facts.path]
    assert os.path.exists(base.path)


# LVM: logical volumes emulated by loop devices ---------------------------------


class LoopBackedLvm:
    """Runner standing in for lvcreate/lvremove (device-mapper is missing here).

    Each volume is a real loop device linked at <dev_dir>/<vg>/<lv>; every
    other command (shred, mkswap) really runs.
    """

    def __init__(self, dev_dir: str, loop_device: Callable) -> None:
        self.dev_dir = dev_dir
        self.loop_device = loop_device
        self.calls: list[list[str]] = []
        self.loops: dict[str, str] = {}

    def __call__(self, *argv: str, **kwargs) -> tuple[str, str]:
        self.calls.append(list(argv))
        if argv[0] == "lvcreate":
            size = int(argv[argv.index("-L") + 1].rstrip("b"))
            name, group = argv[argv.index("-n") + 1], argv[-1]
            loop = self.loop_device(size=size)
            os.makedirs(os.path.join(self.dev_dir, group), exist_ok=True)
            os.symlink(loop.path, os.path.join(self.dev_dir, group, name))
            self.loops[name] = loop.path
            return "", ""
        if argv[0] == "lvremove":
            os.unlink(os.path.join(self.dev_dir, argv[-1]))
            return "", ""
        return processutils.execute(*argv, **kwargs)


@pytest.fixture
def lvm(make_conf, loop_device, tmp_path):
    def factory(**libvirt_opts) -> tuple[Lvm, LoopBackedLvm]:
        conf = make_conf(
            libvirt={"images_type": "lvm", "images_volume_group": "vg0", **libvirt_opts}
        )
        runner = LoopBackedLvm(str(tmp_path / "dev"), loop_device)
        return Lvm(conf, execute=runner, dev_dir=runner.dev_dir), runner

    return factory


@requires_root
def test_lvm_root_disk(lvm, tmp_path, libvirt_host):
    backend, runner = lvm()
    base = make_base(str(tmp_path / "instances"))

    disk = backend.create_root(f"/var/lib/nova/instances/{UUID}", "vda", base, 16 * MiB)

    volume = f"{UUID}_disk"
    assert runner.calls[0] == ["lvcreate", "--yes", "-L", f"{16 * MiB}b", "-n", volume, "vg0"]
    path = os.path.join(runner.dev_dir, "vg0", volume)
    assert same_content(path, "raw", base)
    facts = disk.facts
    assert (facts.source_type, facts.format, facts.path, facts.size) == (
        "block",
        "raw",
        path,
        16 * MiB,
    )
    assert facts.fully_allocated and facts.storage_kind == "lvm" and facts.driver == "lvm"
    assert disk.config.source_type == "block" and disk.config.source_path == path
    driver = driver_of(define_tuned(libvirt_host, backend.conf, disk), "vda")
    assert (driver.get("cache"), driver.get("io")) == ("none", "native")


@requires_root
def test_lvm_failed_write_removes_the_volume(lvm, tmp_path):
    backend, runner = lvm()
    missing = CachedImage(str(tmp_path / "gone"), "raw", MiB, created=False)
    with pytest.raises(exception.ImageNotFound):
        backend.create_root(UUID, "vda", missing, 4 * MiB)
    assert runner.calls[-1] == ["lvremove", "-f", f"vg0/{UUID}_disk"]
    assert os.listdir(os.path.join(runner.dev_dir, "vg0")) == []


@requires_root
def test_lvm_volume_is_announced_before_lvcreate(lvm, tmp_path):
    backend, runner = lvm()
    base = make_base(str(tmp_path / "instances"))
    announced: list[tuple[str, ...]] = []
    calls_when_announced: list[int] = []

    def announce(names: tuple[str, ...]) -> None:
        announced.append(names)
        calls_when_announced.append(len(runner.calls))

    disk = backend.create_root(UUID, "vda", base, 16 * MiB, announce=announce)

    assert announced == [(disk.facts.path,)] and calls_when_announced == [0]


@requires_root
def test_lvm_existing_volume_is_refused_and_never_announced(lvm, loop_device):
    backend, runner = lvm()
    theirs = loop_device(size=4 * MiB)
    os.makedirs(os.path.join(runner.dev_dir, "vg0"))
    link = os.path.join(runner.dev_dir, "vg0", f"{UUID}_disk.eph0")
    os.symlink(theirs.path, link)
    announced: list[tuple[str, ...]] = []

    with pytest.raises(exception.StorageError, match="exists already"):
        backend.create_blank(UUID, "vdb", 4 * MiB, "ephemeral", announce=announced.append)

    assert announced == [] and runner.calls == [] and os.readlink(link) == theirs.path


@requires_root
def test_lvm_spawn_killed_after_lvcreate_leaves_a_record_destroy_reads(
    lvm, make_conf, tmp_path, monkeypatch
):
    """The record as a kill -9 right after lvcreate leaves it lists the volume."""
    from nova_disk_tuning.agent.driver import LibvirtDriver
    from nova_disk_tuning.agent.instance import Flavor, ImageMeta, Instance
    from nova_disk_tuning.images.sample import build_sample_image

    backend, runner = lvm(connection_uri="test:///default", virt_type="qemu")
    instances = backend.conf.instances_path
    record_at_lvcreate: list[bytes] = []
    inner = runner.__call__

    class Snapshotting(LoopBackedLvm):
        def __call__(self, *argv: str, **kwargs) -> tuple[str, str]:
            result = inner(*argv, **kwargs)
            if argv[0] == "lvcreate":
                (record,) = Path(instances).glob("*/instance.json")
                record_at_lvcreate.append(record.read_bytes())
            return result

    runner.__class__ = Snapshotting
    driver = LibvirtDriver(backend.conf)
    monkeypatch.setattr(driver, "backend", lambda name=None: backend)
    image = build_sample_image(str(tmp_path / "image"), size_mb=8, name="lvm")
    result = driver.spawn(
        Instance("lvm-killed"), ImageMeta(id="lvm", source=image, disk_format="qcow2"), Flavor()
    )
    (record_path,) = Path(instances).glob("*/instance.json")
    volume = result.record.disks[0].path

    # What kill -9 just after lvcreate leaves: the volume, and the record then.
    record_path.write_bytes(record_at_lvcreate[0])
    (listed,) = json.loads(record_at_lvcreate[0])["disks"]
    assert (listed["made"], listed["created"]) == (False, [volume])
    driver.destroy("lvm-killed")

    assert runner.calls[-1] == ["lvremove", "-f", f"vg0/{os.path.basename(volume)}"]
    assert not os.path.lexists(volume) and not record_path.parent.exists()


@requires_root
def test_lvm_swap_is_formatted_on_the_volume(lvm):
    backend, runner = lvm()
    disk = backend.create_blank(UUID, "vdb", 8 * MiB, "swap")
    assert disk.facts.path.endswith(f"vg0/{UUID}_disk.swap")
    assert blkid(runner.loops[f"{UUID}_disk.swap"], "TYPE") == "swap"
    assert runner.calls[1] == ["mkswap", disk.facts.path]


PATTERN = b"\xab" * MiB


@requires_root
@pytest.mark.parametrize(
    ("clear", "clear_mib", "wiped_mib"),
    [("zero", 0, 8), ("zero", 3, 3), ("zero", 100, 8), ("shred", 2, 2), ("none", 0, 0)],
)
def test_lvm_destroy_wipes_then_removes(lvm, clear, clear_mib, wiped_mib):
    backend, runner = lvm(volume_clear=clear, volume_clear_size=clear_mib)
    disk = backend.create_blank(UUID, "vdb", 8 * MiB, "ephemeral")
    device = runner.loops[f"{UUID}_disk.eph0"]
    with open(device, "r+b") as f:
        for _ in range(8):
            f.write(PATTERN)

    assert backend.destroy([disk.config]) == [disk.facts.path]

    assert runner.calls[-1] == ["lvremove", "-f", f"vg0/{UUID}_disk.eph0"]
    if clear == "shred":
        assert ["shred", "-n3", "-s", str(wiped_mib * MiB), disk.facts.path] in runner.calls
    with open(device, "rb") as f:
        data = f.read()
    wiped, kept = data[: wiped_mib * MiB], data[wiped_mib * MiB :]
    assert kept == PATTERN * (8 - wiped_mib)
    if clear == "zero":
        assert wiped == bytes(len(wiped))
    else:
        assert PATTERN[:4096] not in wiped  # shred left random data


@requires_root
def test_lvm_zero_uses_the_device_fast_path(lvm):
    backend, _ = lvm()
    disk = backend.create_blank(UUID, "vdb", 4 * MiB, "ephemeral")
    assert backend.wipe(disk.facts.path) in ("zero_range", "blkzeroout")


# RBD: XML only (no Ceph here); the commands are unit-tested -------------------


def test_rbd_disk_xml_passes_the_schema(make_conf, tmp_path, libvirt_host):
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text(
        "[global]\n\tmon host = [v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0] 10.0.0.2\n"
    )
    conf = make_conf(
        libvirt={
            "images_type": "rbd",
            "images_rbd_ceph_conf": str(ceph_conf),
            "rbd_user": "nova",
            "rbd_secret_uuid": "0b1e8d3c-6a5f-4d2e-9c7b-5f4e3d2c1b0a",
        }
    )
    calls: list[tuple[str, ...]] = []
    backend = Rbd(conf, execute=lambda *argv, **kw: calls.append(argv) or ("", ""))
    disk = backend.create_blank(UUID, "vdb", 8 * MiB, "ephemeral")

    kept = define_tuned(libvirt_host, conf, disk)
    (source,) = kept.xpath("devices/disk[target/@dev='vdb']/source")
    assert source.get("protocol") == "rbd" and source.get("name") == f"rbd/{UUID}_disk.eph0"
    assert [(h.get("name"), h.get("port")) for h in source.iter("host")] == [
        ("10.0.0.1", "3300"),
        ("10.0.0.2", None),
    ]
    assert driver_of(kept, "vdb").get("io") is None


@pytest.mark.parametrize("images_type", ["flat", "qcow2"])
def test_destroy_never_removes_files_outside_instances_path(tmp_path, make_conf, images_type):
    """A record edited or restored elsewhere must not make destroy delete others' files."""
    _, backend = backend_for(make_conf, str(tmp_path / "root"), images_type, "none")
    victim = tmp_path / "someone-elses-file"
    victim.write_text("keep me")
    assert backend.destroy([str(victim)]) == []
    assert victim.read_text() == "keep me"
