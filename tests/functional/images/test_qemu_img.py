"""QemuImg against the installed qemu-img and real file systems."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from oslo_concurrency import processutils

from nova_disk_tuning import exception
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.storage.probe import StorageProbe
from tests.functional.images.conftest import MiB, compare, run, write_random


class NoDirectIOProbe(StorageProbe):
    """The real probe, except that it answers "no O_DIRECT".

    Every file system mounted on this Linux (>= 6.6, tmpfs included) supports
    O_DIRECT, so the no-O_DIRECT case needs this one answer replaced.
    """

    def supports_direct_io(self, path: str) -> bool:
        return False


def test_qcow2_to_raw_identical(conf, tmp_path, qcow2_image):
    dst = str(tmp_path / "out.raw")
    result = QemuImg(conf).convert(qcow2_image, dst, "qcow2", "raw")
    assert compare(qcow2_image, "qcow2", dst, "raw").returncode == 0
    assert result.command[:4] == ["qemu-img", "convert", "-t", "none"]  # ext4: O_DIRECT
    assert result.target_is_zero and "--target-is-zero" in result.command
    assert os.path.getsize(dst) == 32 * MiB


def test_raw_to_qcow2_identical(conf, tmp_path, raw_image):
    dst = str(tmp_path / "out.qcow2")
    result = QemuImg(conf).convert(raw_image, dst, "raw", "qcow2")
    assert compare(raw_image, "raw", dst, "qcow2").returncode == 0
    assert "-W" not in result.command
    assert json.loads(run("qemu-img", "info", "--output=json", dst))["format"] == "qcow2"


def test_sparse_source_stays_sparse(conf, tmp_path):
    src, dst = str(tmp_path / "sparse.raw"), str(tmp_path / "sparse.out")
    write_random(src, 64 * MiB, data=16 * MiB)
    qcow2 = str(tmp_path / "sparse.qcow2")
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", src, qcow2)
    QemuImg(conf).convert(qcow2, dst, "qcow2", "raw", preallocation="none")
    assert compare(src, "raw", dst, "raw").returncode == 0
    assert os.stat(dst).st_blocks * 512 < 24 * MiB


@pytest.mark.parametrize("filesystem", ["ext4", "tmpfs"], indirect=True)
def test_target_cache_follows_the_probe(conf, filesystem, qcow2_image):
    probe = StorageProbe()
    dst = os.path.join(filesystem, "out.raw")
    result = QemuImg(conf, probe=probe).convert(qcow2_image, dst, "qcow2", "raw")
    expected = "none" if probe.supports_direct_io(filesystem) else "writeback"
    assert result.target_cache == expected
    assert result.command[result.command.index("-t") + 1] == expected
    assert compare(qcow2_image, "qcow2", dst, "raw").returncode == 0


def test_no_direct_io_destination_uses_writeback(conf, tmp_path, qcow2_image):
    dst = str(tmp_path / "out.raw")
    result = QemuImg(conf, probe=NoDirectIOProbe()).convert(qcow2_image, dst, "qcow2", "raw")
    argv = result.command
    assert argv[argv.index("-t") + 1] == "writeback"
    assert argv[argv.index("-T") + 1] == "writeback"  # source cache none needs O_DIRECT too
    assert compare(qcow2_image, "qcow2", dst, "raw").returncode == 0


def test_progress_reported(conf, tmp_path, qcow2_image):
    seen: list[float] = []
    QemuImg(conf).convert(qcow2_image, str(tmp_path / "o"), "qcow2", "raw", progress=seen.append)
    assert len(seen) > 3
    assert seen == sorted(seen) and seen[-1] == 100.0


def test_preallocated_raw_target(make_conf, tmp_path, qcow2_image):
    conf = make_conf(DEFAULT={"preallocate_images": "space"})
    dst = str(tmp_path / "out.raw")
    result = QemuImg(conf).convert(qcow2_image, dst, "qcow2", "raw")
    assert result.preallocation == "space"
    assert os.stat(dst).st_blocks * 512 >= 32 * MiB
    assert compare(qcow2_image, "qcow2", dst, "raw").returncode == 0


def test_performance_overlay_reads_back_its_base(conf, tmp_path, raw_image):
    overlay = str(tmp_path / "overlay.qcow2")
    tool = QemuImg(conf)
    result = tool.create(overlay, "qcow2", None, raw_image, "raw", preallocation="performance")
    assert result.preallocation == "performance"
    info = json.loads(run("qemu-img", "info", "--output=json", overlay))
    assert info["format-specific"]["data"]["extended-l2"] is True
    assert info["cluster-size"] == 128 * 1024
    assert info["backing-filename-format"] == "raw"
    assert compare(overlay, "qcow2", raw_image, "raw").returncode == 0


def test_space_qcow2_keeps_apparent_size(conf, tmp_path):
    disk = str(tmp_path / "disk.qcow2")
    QemuImg(conf).create(disk, "qcow2", 16 * MiB, preallocation="space")
    assert os.path.getsize(disk) < 1 * MiB  # qcow2 length is metadata only
    assert os.stat(disk).st_blocks * 512 >= 16 * MiB


def test_resize(conf, tmp_path):
    disk = str(tmp_path / "disk.raw")
    tool = QemuImg(conf)
    tool.create(disk, "raw", 1 * MiB, preallocation="none")
    tool.resize(disk, 8 * MiB, "raw")
    assert tool.info(disk, "raw").virtual_size == 8 * MiB


def test_info_real_image_and_errors(conf, tmp_path, qcow2_image, monkeypatch):
    tool = QemuImg(conf)
    # [libvirt] images_address_space_limit counts GiB (Nova's unit); a limit
    # qemu-img really hits needs less than the smallest value, 1 GiB.
    small = processutils.ProcessLimits(cpu_time=30, address_space=64 * MiB)
    monkeypatch.setattr(tool, "limits", lambda: small)
    info = tool.info(qcow2_image, "qcow2")
    assert (info.file_format, info.virtual_size) == ("qcow2", 32 * MiB)
    with pytest.raises(exception.ImageNotFound):
        tool.info(str(tmp_path / "absent"), "raw")
    with pytest.raises(exception.QemuImgError, match="not in qcow2 format"):
        tool.info(str(tmp_path / "data.raw"), "qcow2")
    # A 1 PiB qcow2 needs a 16 MiB L1 table and caches: more than 64 MiB.
    huge = str(tmp_path / "huge.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", huge, str(1 << 50))
    with pytest.raises(exception.ImageLimitExceeded, match="images_address_space_limit"):
        tool.info(huge, "qcow2")


def test_version_and_features(conf):
    tool = QemuImg(conf)
    out = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout
    major, minor = tool.version()[:2]
    assert out.startswith(f"qemu-img version {major}.{minor}.")
    assert tool.supports_extended_l2() == (tool.version() >= (5, 2, 0))


def test_enospc_is_clear_and_leaves_nothing(conf, small_filesystem, tmp_path):
    src = str(tmp_path / "big.qcow2")
    raw = str(tmp_path / "big.raw")
    write_random(raw, 24 * MiB)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, src)
    dst = os.path.join(small_filesystem.path, "out.raw")
    with pytest.raises(exception.InsufficientStorage, match=r"out\.raw"):
        QemuImg(conf).convert(src, dst, "qcow2", "raw", preallocation="none")
    assert not os.path.exists(dst)


def test_space_on_a_file_system_without_fallocate_reports_sparse(conf, make_filesystem):
    """ext2 cannot fallocate: the result must not claim `space`."""
    disk = os.path.join(make_filesystem("ext2").path, "disk.qcow2")
    result = QemuImg(conf).create(disk, "qcow2", 16 * MiB, preallocation="space")
    assert result.requested == "space"
    assert result.preallocation == "none"
    assert "cannot fallocate" in result.reason
    assert os.stat(disk).st_blocks * 512 < 16 * MiB


def test_convert_onto_a_block_device_probes_the_device(conf, loop_device, raw_image):
    """The target cache is decided by the device, not by /dev (a tmpfs)."""
    size = os.path.getsize(raw_image)
    device = loop_device(sector_size=4096, size=size).path
    result = QemuImg(conf).convert(raw_image, device, "raw", "raw")
    assert result.target_cache == "none"
    assert any(device in reason for reason in result.reasons), result.reasons
    assert compare(raw_image, "raw", device, "raw").returncode == 0


def test_convert_never_reads_a_backing_file_the_header_names(make_conf, tmp_path):
    """A qcow2 swapped in after the safety check cannot make qemu-img read a host file."""
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"TOP-SECRET-HOST-FILE" * 1024)
    hostile = tmp_path / "hostile.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw",
         str(hostile), "1M"],
        check=True,
    )  # fmt: skip
    out = tmp_path / "out.raw"
    QemuImg(make_conf()).convert(str(hostile), str(out), "qcow2", "raw", preallocation="none")
    assert b"TOP-SECRET" not in out.read_bytes()
    assert out.stat().st_size == 1 << 20
