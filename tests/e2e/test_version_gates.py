"""The policy's version-gated choices reach QEMU exactly where the stack has them.

Run on each stack (``make e2e`` on the host's libvirt 9.0 / QEMU 7.2, ``make
e2e-next`` on libvirt 11.3 / QEMU 10.0 from bookworm-backports): a guest with
4 vCPUs and 2 IOThreads on a preallocated qcow2 root with ``discard=unmap``,
and one on a raw disk with io_uring, both spawned through the plugin. What
QEMU's command line must show follows the daemon's versions:

* per-queue IOThread mapping (libvirt >= 10.0 with QEMU >= 9.0): the root
  disk's ``iothread-vq-mapping`` spreads its queues over both IOThreads;
  older stacks bind the disk to one IOThread and have no mapping;
* ``discard-no-unref`` on the qcow2 node (libvirt >= 9.5) with
  ``discard: unmap``; older stacks give ``unmap`` without it;
* ``aio: io_uring`` on the raw disk on every stack (QEMU >= 5.0).
"""

from __future__ import annotations

from pathlib import Path

from nova_disk_tuning_bench.guest import domains

from nova_disk_tuning.agent.driver import LibvirtDriver
from nova_disk_tuning.agent.instance import Flavor, Instance
from nova_disk_tuning.common.versions import (
    DISCARD_NO_UNREF_LIBVIRT,
    QUEUE_MAPPING_LIBVIRT,
    QUEUE_MAPPING_QEMU,
    parse_version,
)
from tests.e2e.test_spawn_e2e import image, image_meta, make_conf, wait_and_report

__all__ = ["image"]  # the fixture


def test_gated_features_follow_the_stack(tmp_path: Path, guest_kit, libvirtd, image) -> None:
    versions = libvirtd.versions()
    libvirt_v, qemu_v = parse_version(versions["libvirt"]), parse_version(versions["qemu"])
    assert libvirt_v is not None and qemu_v is not None
    mapping = libvirt_v >= QUEUE_MAPPING_LIBVIRT and qemu_v >= QUEUE_MAPPING_QEMU
    no_unref = libvirt_v >= DISCARD_NO_UNREF_LIBVIRT

    qcow2_driver = LibvirtDriver(
        make_conf(
            tmp_path / "qcow2",
            libvirtd.uri,
            DEFAULT={"preallocate_images": "performance"},
            libvirt={"images_type": "qcow2", "hw_disk_discard": "unmap"},
            disk_tuning={"iothreads": 2},
        )
    )
    uring_driver = LibvirtDriver(
        make_conf(
            tmp_path / "uring",
            libvirtd.uri,
            DEFAULT={"preallocate_images": "space"},
            libvirt={"images_type": "flat"},
            disk_tuning={"aio_mode": "io_uring"},
        )
    )
    names = ("e2e-gates-qcow2", "e2e-gates-uring")
    qcow2 = qcow2_driver.spawn(
        Instance(names[0]),
        image_meta(image, guest_kit, ["vda"]),
        Flavor(vcpus=4, memory_mb=256),
        start=True,
    )
    uring = uring_driver.spawn(
        Instance(names[1]),
        image_meta(image, guest_kit, ["vda"]),
        Flavor(vcpus=1, memory_mb=256),
        start=True,
    )
    try:
        report, argv = wait_and_report(qcow2_driver, names[0], libvirtd)
        assert report.results == {"vda": "ok"}, report
        root = domains.disk_by_source(argv, qcow2.record.to_dict()["disks"][0]["path"])
        assert root.device is not None and root.format is not None
        threads = domains.iothread_ids(argv)
        # One disk: a second IOThread is defined only where its queues can use it.
        assert len(threads) == (2 if mapping else 1), argv
        vq_mapping = root.device.raw.get("iothread-vq-mapping")
        decided = qcow2.tuning.disk("vda")
        if mapping:
            assert vq_mapping, (versions, root.device.raw)
            assert {entry["iothread"] for entry in vq_mapping} == set(threads)
            queues = int(root.device.raw["num-queues"])
            spread = sorted(vq for entry in vq_mapping for vq in entry["vqs"])
            assert spread == list(range(queues)) and queues >= 2, vq_mapping
            assert decided.iothread_queues.value, decided.iothread_queues
        else:
            assert vq_mapping is None, root.device.raw
            assert root.iothread in threads
            assert "per-queue mapping needs" in decided.iothread_queues.reason
        assert root.format.raw.get("discard") == "unmap", root.format.raw
        if no_unref:
            assert root.format.raw.get("discard-no-unref") is True, root.format.raw
        else:
            assert "discard-no-unref" not in root.format.raw
            assert "< 9.5" in decided.discard_no_unref.reason

        report, argv = wait_and_report(uring_driver, names[1], libvirtd)
        assert report.results == {"vda": "ok"}, report
        disk = domains.disk_by_source(argv, uring.record.to_dict()["disks"][0]["path"])
        assert disk.aio == "io_uring", disk.storage.raw
    finally:
        qcow2_driver.destroy(names[0])
        uring_driver.destroy(names[1])
