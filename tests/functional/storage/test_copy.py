"""The sparse copy of a disk on real file systems: the data, not the allocation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nova_disk_tuning.storage import copy as copy_mod
from nova_disk_tuning.storage.preallocate import preallocate
from tests.functional.conftest import MiB, requires_root
from tests.functional.storage import util

pytestmark = requires_root
SIZE = 24 * MiB  # and a copy of its data: room on the 64 MiB ext4 of the fixture


def preallocated_disk(path: str) -> list[tuple[int, int]]:
    """A fallocated raw disk of SIZE with 1 MiB of pattern every 8 MiB."""
    preallocate(path, SIZE)
    written = [(offset, MiB) for offset in range(0, SIZE, 8 * MiB)]
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, length in written:
            os.pwrite(fd, util.expected_pattern(offset, length), offset)
        os.fsync(fd)
        # As after a guest with cache=none: nothing of it in the page cache.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return written


def assert_same_bytes(src: str, dest: str) -> None:
    assert os.path.getsize(dest) == os.path.getsize(src)
    for offset in range(0, SIZE, 4 * MiB):
        assert util.read(dest, offset, 4 * MiB) == util.read(src, offset, 4 * MiB), offset


@pytest.mark.parametrize("filesystem", ["ext4", "xfs"], indirect=True)
def test_a_preallocated_disk_copies_its_data_only(filesystem):
    src, dest = os.path.join(filesystem, "disk"), os.path.join(filesystem, "copy")
    written = preallocated_disk(src)
    os.chmod(src, 0o600)
    data = sum(length for _, length in written)
    assert copy_mod.copy_sparse(src, dest) == data
    assert_same_bytes(src, dest)
    # The unwritten extents stayed holes: readahead after each data extent
    # did not turn them into data (the whole map is taken first).
    assert util.allocated(dest) <= data + MiB
    assert os.stat(dest).st_mode & 0o777 == 0o600


def test_a_copy_across_file_systems_falls_back_to_reads_and_writes(make_filesystem):
    ext4, xfs = make_filesystem("ext4").path, make_filesystem("xfs").path
    src, dest = os.path.join(ext4, "disk"), os.path.join(xfs, "copy")
    preallocated_disk(src)
    copier = copy_mod.ExtentCopier()
    src_fd = os.open(src, os.O_RDONLY)
    dst_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        copier.copy(src_fd, dst_fd, SIZE)
        os.ftruncate(dst_fd, SIZE)
    finally:
        os.close(src_fd)
        os.close(dst_fd)
    assert not copier._copy_file_range  # EXDEV, remembered
    assert_same_bytes(src, dest)


def test_a_full_file_system_leaves_no_partial_copy(small_filesystem, filesystem):
    src = os.path.join(filesystem, "disk")
    util.fill(src, 32 * MiB)  # all data: more than the 16 MiB file system holds
    dest = os.path.join(small_filesystem.path, "copy")
    with pytest.raises(OSError) as info:
        copy_mod.copy_sparse(src, dest)
    assert info.value.errno == 28  # ENOSPC
    assert not os.path.exists(dest)


def test_nothing_is_overwritten_and_special_files_are_refused(filesystem):
    src, dest = os.path.join(filesystem, "disk"), os.path.join(filesystem, "copy")
    util.fill(src, MiB)
    with open(dest, "wb") as handle:
        handle.write(b"keep")
    with pytest.raises(FileExistsError):
        copy_mod.copy_sparse(src, dest)
    assert util.read(dest, 0, 16) == b"keep"
    fifo = os.path.join(filesystem, "fifo")
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):  # and not waited on
        copy_mod.copy_sparse(fifo, os.path.join(filesystem, "fifo-copy"))
    assert not os.path.exists(os.path.join(filesystem, "fifo-copy"))


def test_the_command_copies_and_fails_in_one_line(filesystem):
    src, dest = os.path.join(filesystem, "disk"), os.path.join(filesystem, "copy")
    preallocated_disk(src)
    argv = copy_mod.sparse_copy_argv(src, dest)
    assert argv[:3] == [sys.executable, "-m", "nova_disk_tuning.storage.copy"]
    subprocess.run(argv, check=True)
    assert_same_bytes(src, dest)
    missing = subprocess.run(
        copy_mod.sparse_copy_argv(os.path.join(filesystem, "nothing"), dest + "2"),
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "No such file or directory" in missing.stderr


def test_a_source_in_the_page_cache_still_copies_its_data_only(filesystem):
    # A backup or a host-cached guest read the whole disk: on ext4 every
    # cached page of an unwritten extent is data to SEEK_DATA.
    src, dest = os.path.join(filesystem, "disk"), os.path.join(filesystem, "copy")
    written = preallocated_disk(src)
    with open(src, "rb") as handle:
        while handle.read(4 * MiB):
            pass
    copy_mod.copy_sparse(src, dest)
    assert_same_bytes(src, dest)
    assert util.allocated(dest) <= sum(length for _, length in written) + MiB


def test_sigterm_mid_copy_leaves_no_partial_copy(tmp_path):
    src, dest = str(tmp_path / "disk"), str(tmp_path / "copy")
    util.fill(src, 512 * MiB)
    fd = os.open(src, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # cold: the copy takes a while
    os.close(fd)
    proc = subprocess.Popen(copy_mod.sparse_copy_argv(src, dest), stderr=subprocess.PIPE)
    # The progress marker: the copy has data in it, and is not whole yet.
    while proc.poll() is None and not (os.path.exists(dest) and util.allocated(dest) > 0):
        pass
    assert proc.poll() is None, "the copy ended before it could be stopped"
    proc.send_signal(15)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + 15
    assert not os.path.exists(dest)
