"""Fast zero on real storage: each kind settles on its expected method."""

from __future__ import annotations

import errno
import logging
import os

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.storage import blockdev, zero
from nova_disk_tuning.storage import fallocate as falloc
from nova_disk_tuning.storage.probe import StorageProbe
from tests.functional.conftest import MiB, requires_root
from tests.functional.storage import util

pytestmark = requires_root

SIZE = 8 * MiB
# Unaligned on purpose: partial blocks at both ends.
OFFSET, LENGTH = MiB + 1000, 4 * MiB + 123

# (kind, sparse) -> the method the chain settles on (Linux 6.x; see
# tmpfs lacks ZERO_RANGE, ext2 (ext4 driver, no extents) lacks fallocate(0)).
FILE_METHODS = {
    ("ext4", False): "zero_range",
    ("ext4", True): "punch_hole",
    ("xfs", False): "zero_range",
    ("xfs", True): "punch_hole",
    ("tmpfs", False): "punch_hole+allocate",
    ("tmpfs", True): "punch_hole",
    ("ext2", False): "write",
    ("ext2", True): "punch_hole",
}


@pytest.mark.parametrize(("kind", "sparse"), sorted(FILE_METHODS))
def test_zero_file(make_filesystem, kind, sparse):
    mount = make_filesystem(kind)
    path = os.path.join(mount.path, "disk.raw")
    util.fill(path, SIZE)
    before = util.allocated(path)
    assert before >= SIZE

    result = zero.Zeroer().zero(path, OFFSET, LENGTH, sparse=sparse)

    assert result.method == FILE_METHODS[(kind, sparse)]
    assert result.bytes == LENGTH and result.seconds > 0
    util.assert_zeroed(path, OFFSET, LENGTH, SIZE)
    assert os.stat(path).st_size == SIZE
    after = util.allocated(path)
    if sparse:
        # Whole blocks inside the range are gone; partial edge blocks stay.
        assert after <= before - (LENGTH - 2 * 4096), (before, after)
    else:
        assert after >= SIZE, (before, after)


@pytest.mark.parametrize("kind", ["ext4", "tmpfs", "ext2"])
def test_zero_past_eof_extends_like_writing(make_filesystem, kind):
    mount = make_filesystem(kind)
    path = os.path.join(mount.path, "disk.raw")
    util.fill(path, MiB)
    with pytest.raises(exception.InvalidRange, match="past the file's"):
        zero.Zeroer().zero(path, 2 * MiB, MiB)
    assert os.stat(path).st_size == MiB
    result = zero.Zeroer().zero(path, 2 * MiB, MiB, extend=True)
    assert os.stat(path).st_size == 3 * MiB
    assert util.read(path, 0, MiB) == util.expected_pattern(0, MiB)
    assert util.read(path, MiB, 2 * MiB).count(0) == 2 * MiB
    expected = {"ext4": "zero_range", "tmpfs": "allocate", "ext2": "write"}[kind]
    assert result.method == expected
    assert util.allocated(path) >= 2 * MiB  # the zeroed range is allocated


def test_whole_file_by_default(filesystem):
    path = os.path.join(filesystem, "disk.raw")
    util.fill(path, SIZE)
    result = zero.Zeroer().zero(path)
    assert result.bytes == SIZE
    assert util.read(path, 0, SIZE).count(0) == SIZE


def test_tmpfs_remembers_zero_range_failure(make_filesystem, monkeypatch, caplog):
    path = os.path.join(make_filesystem("tmpfs").path, "disk.raw")
    util.fill(path, SIZE)
    calls: list[int] = []
    real = falloc.fallocate

    def spy(fd, mode, offset, length):
        calls.append(mode)
        return real(fd, mode, offset, length)

    monkeypatch.setattr(falloc, "fallocate", spy)
    zeroer = zero.Zeroer()
    punch = falloc.FALLOC_FL_PUNCH_HOLE | falloc.FALLOC_FL_KEEP_SIZE

    with caplog.at_level(logging.INFO, logger="nova_disk_tuning.storage.zero"):
        first = zeroer.zero(path, 0, MiB)
    assert first.method == "punch_hole+allocate"
    assert calls == [falloc.FALLOC_FL_ZERO_RANGE, punch, 0]
    assert zeroer.unsupported(path) == {"zero_range"}
    assert any(
        "ZERO_RANGE (EOPNOTSUPP) unsupported on tmpfs" in r.getMessage() for r in caplog.records
    )

    calls.clear()
    second = zeroer.zero(path, MiB, MiB)
    assert second.method == "punch_hole+allocate"
    assert calls == [punch, 0], "the second call must start at the step that works"
    util.assert_zeroed(path, 0, 2 * MiB, SIZE)

    # A fresh Zeroer has no memory: it probes again.
    calls.clear()
    zero.Zeroer().zero(path, 0, MiB)
    assert calls[0] == falloc.FALLOC_FL_ZERO_RANGE


def test_ext2_remembers_and_goes_straight_to_writes(make_filesystem):
    path = os.path.join(make_filesystem("ext2").path, "disk.raw")
    util.fill(path, SIZE)
    zeroer = zero.Zeroer()
    assert zeroer.zero(path, 0, MiB).method == "write"
    assert zeroer.unsupported(path) == {"zero_range", "allocate"}
    assert zeroer.zero(path, MiB, MiB).method == "write"
    util.assert_zeroed(path, 0, 2 * MiB, SIZE)


def test_memory_is_per_file_system(make_filesystem):
    tmpfs = os.path.join(make_filesystem("tmpfs").path, "a")
    ext4 = os.path.join(make_filesystem("ext4").path, "b")
    util.fill(tmpfs, MiB)
    util.fill(ext4, MiB)
    zeroer = zero.Zeroer()
    assert zeroer.zero(tmpfs).method == "punch_hole+allocate"
    assert zeroer.zero(ext4).method == "zero_range"
    assert zeroer.unsupported(ext4) == frozenset()


# Block devices ---------------------------------------------------------------


@pytest.mark.parametrize("sector_size", [512, 4096])
@pytest.mark.parametrize("sparse", [False, True], ids=["allocate", "sparse"])
def test_zero_block_device(loop_device, sector_size, sparse):
    loop = loop_device(sector_size=sector_size, size=SIZE)
    util.fill(loop.path, SIZE)
    before = util.allocated(loop.backing)
    assert before >= SIZE
    offset, length = 3 * sector_size * 64, 4 * MiB  # aligned

    result = zero.Zeroer().zero(loop.path, offset, length, sparse=sparse)

    # PUNCH_HOLE on a loop device becomes a hole in its backing file;
    # ZERO_RANGE keeps the backing file allocated.
    assert result.method == ("punch_hole" if sparse else "zero_range")
    util.assert_zeroed(loop.path, offset, length, SIZE)
    after = util.allocated(loop.backing)
    if sparse:
        assert after <= before - length, (before, after)
    else:
        assert after >= SIZE, (before, after)


@pytest.mark.parametrize(
    ("offset", "length"),
    [(3 * 4096 + 1000, 3 * 4096 + 200), (10, 100), (4096, 4096 + 7), (4096 - 1, 2)],
    ids=["head-and-tail", "inside-one-block", "tail-only", "straddling"],
)
def test_unaligned_range_on_4k_device(loop_device, offset, length):
    loop = loop_device(sector_size=4096, size=MiB)
    util.fill(loop.path, MiB)
    # The kernel refuses such a range itself.
    with open(loop.path, "r+b") as f, pytest.raises(OSError) as info:
        falloc.fallocate(f.fileno(), falloc.FALLOC_FL_ZERO_RANGE, offset, length)
    assert info.value.errno == errno.EINVAL

    result = zero.Zeroer().zero(loop.path, offset, length)

    util.assert_zeroed(loop.path, offset, length, MiB)
    aligned_middle = (offset + length) // 4096 * 4096 > -(-offset // 4096) * 4096
    assert result.method == ("zero_range" if aligned_middle else "write")


def test_range_past_device_end_is_a_clear_error(loop_device):
    loop = loop_device(sector_size=4096, size=MiB)
    util.fill(loop.path, MiB)
    with pytest.raises(exception.InvalidRange, match="past the device's 1048576 bytes"):
        zero.Zeroer().zero(loop.path, MiB - 4096, 8192)
    assert util.read(loop.path, 0, MiB) == util.expected_pattern(0, MiB)


def test_blkzeroout_when_the_kernel_lacks_zero_range(loop_device, monkeypatch, caplog):
    # Kernels before 4.9 answer EOPNOTSUPP to fallocate on block devices;
    # this one does not, so the answer is simulated for the device only.
    loop = loop_device(sector_size=512, size=SIZE)
    util.fill(loop.path, SIZE)
    real = falloc.fallocate
    rdev = os.stat(loop.path).st_rdev

    def old_kernel(fd, mode, offset, length):
        if os.fstat(fd).st_rdev == rdev:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        return real(fd, mode, offset, length)

    monkeypatch.setattr(falloc, "fallocate", old_kernel)
    zeroer = zero.Zeroer()
    with caplog.at_level(logging.INFO, logger="nova_disk_tuning.storage.zero"):
        assert zeroer.zero(loop.path, MiB, 2 * MiB).method == "blkzeroout"
        assert zeroer.zero(loop.path, 4 * MiB, MiB, sparse=True).method == "blkzeroout"
    assert zeroer.unsupported(loop.path) == {"zero_range", "punch_hole"}
    util.assert_only_zeroed(loop.path, [(MiB, 2 * MiB), (4 * MiB, MiB)], SIZE)
    assert any("blkzeroout" in r.getMessage() for r in caplog.records)


def test_other_errors_are_raised_not_skipped(make_filesystem, monkeypatch):
    path = os.path.join(make_filesystem("ext4").path, "disk.raw")
    util.fill(path, MiB)

    def broken(fd, mode, offset, length):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(falloc, "fallocate", broken)
    zeroer = zero.Zeroer()
    with pytest.raises(exception.StorageError, match="EIO"):
        zeroer.zero(path)
    assert zeroer.unsupported(path) == frozenset()


def test_zero_fd_on_an_open_descriptor(filesystem):
    path = os.path.join(filesystem, "disk.raw")
    util.fill(path, SIZE)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        result = zero.Zeroer(StorageProbe()).zero_fd(fd, 1000, 5000, flush=False)
    finally:
        os.close(fd)
    assert result.method == "zero_range"
    util.assert_zeroed(path, 1000, 5000, SIZE)


def test_block_ioctls_on_loop_devices(loop_device):
    for sector_size in (512, 4096):
        loop = loop_device(sector_size=sector_size, size=2 * MiB)
        util.fill(loop.path, 2 * MiB)
        fd = os.open(loop.path, os.O_RDWR)
        try:
            assert blockdev.logical_block_size(fd) == sector_size
            assert blockdev.device_size(fd) == 2 * MiB
            blockdev.zeroout(fd, 0, MiB)
            os.fsync(fd)
        finally:
            os.close(fd)
        assert util.read(loop.path, 0, MiB).count(0) == MiB
        assert blockdev.is_block_device(loop.path)
        assert not blockdev.is_block_device(loop.backing)


def test_full_ext2_reports_enospc_from_zero_writes(make_filesystem):
    """ext2 ends the chain in zero writes; a full file system fails them with ENOSPC."""
    mount = make_filesystem("ext2")
    path = os.path.join(mount.path, "disk.raw")
    # Sparse, and larger than the file system: the writes run out of space.
    size = 2 * os.statvfs(mount.path).f_blocks * os.statvfs(mount.path).f_frsize
    with open(path, "wb") as handle:
        handle.truncate(size)
    with pytest.raises(exception.StorageError) as info:
        zero.Zeroer().zero(path)
    message = str(info.value)
    assert "ENOSPC" in message and path in message and "writing at offset" in message
    assert os.stat(path).st_size == size
