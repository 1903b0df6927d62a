"""Guests spawned *through the plugin* on the private libvirtd boot, and QEMU got the tuning.

The compute driver (``[libvirt] connection_uri`` = the private daemon,
``virt_type = qemu``) fetches the image into its cache, creates the disks,
tunes them, defines the domain and starts it; the e2e guest kit (direct
kernel boot) writes its pattern to every disk and powers off. The checks:

* QEMU's command line (from the domain's QEMU log, which outlives the guest)
  has ``aio=native`` exactly where ``explain`` said native, ``cache.direct``
  true where the cache is ``none``, and every virtio disk on the IOThread the
  plan bound it to;
* each disk holds the guest's pattern afterwards (read back through QEMU's
  block layer), and the root disk showed the guest the image's bytes.

One instance has one backend (``[libvirt] images_type``), as in Nova, so a
qcow2 root and a raw ephemeral disk take two instances: ``qcow2-perf``
(images_type qcow2, preallocate_images performance, plus a ``local`` block
volume on a loop device) and ``flat-space`` (images_type flat,
preallocate_images space, with a raw ephemeral disk). Both boot at once.

The second case proves the io='native' guard: with ``disk_cachemodes =
file=writeback`` and ``aio_mode = native`` forced, the policy demotes the
disks to threads and the guest boots; a hand-edited ``libvirt.xml`` that
forces native with writeback is refused by the plugin with its own error
(libvirt 9.0's QEMU driver rejects the same XML at definition; older
libvirt passed it on to QEMU, which refuses to start it).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nova_disk_tuning_bench.guest import console as guest
from nova_disk_tuning_bench.guest import domains, kit, lifecycle

from nova_disk_tuning import conf as ndt_conf
from nova_disk_tuning import exception
from nova_disk_tuning.agent.driver import LibvirtDriver
from nova_disk_tuning.agent.instance import Flavor, ImageMeta, Instance
from nova_disk_tuning.images.sample import build_sample_image as build_image

MiB = 1 << 20
BOOT_TIMEOUT = 240.0


@pytest.fixture
def loop_volume(tmp_path: Path) -> Iterator[str]:
    """A 32 MiB loop device standing in for a Cinder volume os-brick connected."""
    backing = tmp_path / "volume.img"
    with open(backing, "wb") as handle:
        handle.truncate(32 * MiB)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(backing)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


@pytest.fixture
def image(tmp_path: Path) -> str:
    return build_image(str(tmp_path), size_mb=16, name="e2e")


def make_conf(tmp_path: Path, uri: str, **groups: dict[str, Any]) -> Any:
    overrides: dict[str, dict[str, Any]] = {
        "DEFAULT": {"instances_path": str(tmp_path / "instances")},
        "libvirt": {"connection_uri": uri, "virt_type": "qemu"},
    }
    for group, values in groups.items():
        overrides.setdefault(group, {}).update(values)
    return ndt_conf.new_conf(overrides=overrides)


def image_meta(image: str, kit: kit.GuestKit, disks: list[str], sums=()) -> ImageMeta:
    return ImageMeta(
        id="e2e-image",
        source=image,
        disk_format="qcow2",
        kernel=str(kit.kernel),
        ramdisk=str(kit.initrd),
        cmdline=guest.guest_cmdline(disks, sums=sums),
    )


def wait_and_report(driver: LibvirtDriver, name: str, libvirtd: Any) -> tuple[Any, list[str]]:
    record = driver.get_record(name)
    console = Path(driver.store.console_path(record.uuid))
    domain = driver.ensure_defined(record)
    lifecycle.wait_for_shutoff(
        domain, timeout=BOOT_TIMEOUT, console_log=console, qemu_log=libvirtd.qemu_log(name)
    )
    report = guest.parse_console(console.read_text(errors="replace"))
    argv = domains.qemu_cmdline_from_log(libvirtd.qemu_log(name))
    assert report.booted and report.done, lifecycle.tail(console)
    return report, argv


def check_qemu_matches_explain(driver: LibvirtDriver, name: str, argv: list[str]) -> None:
    """Every disk's QEMU arguments are what `explain NAME` says it decided."""
    tuning, facts = driver.get_tuning(name)
    threads = domains.iothread_ids(argv)
    assert len(threads) == tuning.iothreads.count.value
    for fact in facts:
        decided = tuning.disk(fact.name)
        args = domains.disk_by_source(argv, fact.path)
        io = decided.io.value or "threads"  # QEMU's default when libvirt emits nothing
        assert args.aio == io, (fact.name, args, decided.io)
        assert args.cache_direct is (decided.cache.value in ("none", "directsync")), fact.name
        assert args.device is not None and args.device.driver.startswith("virtio-blk")
        mapping = args.device.raw.get("iothread-vq-mapping")
        if decided.iothread_queues.value:
            # Per-queue mapping (libvirt >= 10.0, QEMU >= 9.0): the queues, not the disk.
            spread = {f"iothread{k}": list(v) for k, v in decided.iothread_queues.value.items()}
            assert {e["iothread"]: e["vqs"] for e in mapping} == spread, (fact.name, mapping)
            assert set(spread) <= set(threads)
        elif decided.iothread.value is None:
            assert args.iothread is None and mapping is None, fact.name
        else:
            assert args.iothread == f"iothread{decided.iothread.value}", fact.name
            assert args.iothread in threads


def test_spawned_guests_get_the_explained_tuning_and_write_their_disks(
    tmp_path, guest_kit, libvirtd, image, loop_volume
):
    uri = libvirtd.uri
    qcow2_conf = make_conf(
        tmp_path / "qcow2",
        uri,
        DEFAULT={"preallocate_images": "performance"},
        libvirt={"images_type": "qcow2"},
        disk_tuning={"iothreads": 2},
    )
    flat_conf = make_conf(
        tmp_path / "flat",
        uri,
        DEFAULT={"preallocate_images": "space"},
        libvirt={"images_type": "flat"},
    )
    qcow2_driver, flat_driver = LibvirtDriver(qcow2_conf), LibvirtDriver(flat_conf)
    volume = {
        "connection_info": {
            "driver_volume_type": "local",
            "serial": "5f0c1d2e-3b4a-4c5d-8e6f-7a8b9c0d1e2f",
            "data": {"device_path": loop_volume, "access_mode": "rw"},
        }
    }
    first_mib = domains.read_image(image, "qcow2", 0, MiB)

    qcow2 = qcow2_driver.spawn(
        Instance("e2e-qcow2-perf"),
        image_meta(image, guest_kit, ["vda", "vdb"], sums=[("vda", 0, 1)]),
        Flavor(vcpus=1, memory_mb=256),
        {"block_device_mapping": [volume]},
        start=True,
    )
    flat = flat_driver.spawn(
        Instance("e2e-flat-space"),
        image_meta(image, guest_kit, ["vda", "vdb"]),
        Flavor(vcpus=1, memory_mb=256, ephemeral_gb=1),
        start=True,
    )
    try:
        # What was decided, before looking at QEMU: the qcow2 overlay is
        # preallocated (extended L2 + falloc), the flat disks fallocated, the
        # volume a block device: all O_DIRECT and native.
        disks = {d["target"]: d for d in qcow2.record.to_dict()["disks"]}
        assert disks["vda"]["format"] == "qcow2" and disks["vdb"]["source_type"] == "block"
        assert {d["target"]: d["format"] for d in flat.record.to_dict()["disks"]} == {
            "vda": "raw",
            "vdb": "raw",
        }
        for result in (qcow2, flat):
            for disk in result.tuning.disks:
                assert (disk.cache.value, disk.io.value) == ("none", "native"), disk
        if any(d.iothread_queues.value for d in qcow2.tuning.disks):
            # The stack maps queues: one queue each (1 vCPU), over both IOThreads.
            used = sorted(k for d in qcow2.tuning.disks for k in d.iothread_queues.value)
            assert used == [1, 2], [d.iothread_queues for d in qcow2.tuning.disks]
        else:
            assert [d.iothread.value for d in qcow2.tuning.disks] == [1, 2]

        for driver, result in ((qcow2_driver, qcow2), (flat_driver, flat)):
            name = result.record.to_dict()["name"]
            report, argv = wait_and_report(driver, name, libvirtd)
            assert report.results == {"vda": "ok", "vdb": "ok"}, report
            check_qemu_matches_explain(driver, name, argv)

        # The guest saw the image's bytes on its root disk before writing.
        qcow2_console = Path(qcow2_driver.store.console_path(qcow2.record.to_dict()["uuid"]))
        sums = guest.parse_console(qcow2_console.read_text()).sums
        assert sums == {("vda", 0, 1): hashlib.md5(first_mib).hexdigest()}

        # The patterns are in the images and on the volume.
        for result in (qcow2, flat):
            for entry in result.record.to_dict()["disks"]:
                data = domains.read_image(
                    entry["path"], entry["format"], guest.PATTERN_OFFSET, guest.PATTERN_LENGTH
                )
                assert data == guest.expected_pattern(entry["target"]), entry["path"]
        # The base image in the cache is untouched by the guest's writes.
        base = qcow2.record.to_dict()["image"]["cached_path"]
        assert domains.read_image(base, "raw", 0, MiB) == first_mib
    finally:
        for driver, name in ((qcow2_driver, "e2e-qcow2-perf"), (flat_driver, "e2e-flat-space")):
            driver.destroy(name)
    assert not list(Path(tmp_path / "qcow2" / "instances").glob("*/libvirt.xml"))


def test_writeback_cache_boots_with_threads_and_forced_native_is_refused(
    tmp_path, guest_kit, libvirtd, libvirt_conn, image
):
    import libvirt

    conf = make_conf(
        tmp_path,
        libvirtd.uri,
        DEFAULT={"preallocate_images": "space"},
        libvirt={"images_type": "flat", "disk_cachemodes": ["file=writeback"]},
        disk_tuning={"aio_mode": "native"},
    )
    driver = LibvirtDriver(conf)
    name = "e2e-writeback"
    result = driver.spawn(
        Instance(name),
        image_meta(image, guest_kit, ["vda"]),
        Flavor(vcpus=1, memory_mb=256),
        start=True,
    )
    try:
        root = result.tuning.disk("vda")
        assert root.cache.value == "writeback"
        assert root.io.value == "threads"
        assert "demoted to threads" in root.io.reason

        report, argv = wait_and_report(driver, name, libvirtd)
        assert report.results == {"vda": "ok"}
        disk = domains.disk_by_source(argv, result.record.to_dict()["disks"][0]["path"])
        assert disk.aio == "threads"
        assert disk.cache_direct is False
        check_qemu_matches_explain(driver, name, argv)

        # Someone edits libvirt.xml to force native with writeback, and libvirt
        # lost the domain: the plugin refuses to define it again.
        xml_path = Path(driver.store.xml_path(result.record.to_dict()["uuid"]))
        bad = re.sub(r"io=(['\"])threads\1", "io='native'", xml_path.read_text())
        assert "io='native'" in bad and re.search(r"cache=['\"]writeback", bad)
        xml_path.write_text(bad)
        libvirt_conn.lookupByName(name).undefine()
        with pytest.raises(exception.InvalidDiskConfig, match="native AIO needs an O_DIRECT"):
            driver.power_on(name)
        with pytest.raises(libvirt.libvirtError):
            libvirt_conn.lookupByName(name)  # nothing was defined

        # The same XML given to libvirt directly: libvirt's QEMU driver (9.0)
        # rejects it too, at definition; older ones left it to QEMU, which
        # refuses to start ("aio=native was specified, but it requires
        # cache.direct=on"). The plugin says why before either.
        with pytest.raises(libvirt.libvirtError, match="native"):
            libvirt_conn.defineXML(bad)
    finally:
        driver.destroy(name)
