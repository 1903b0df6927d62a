"""Preallocation on real file systems, including running out of space."""

from __future__ import annotations

import logging
import os
import re
import subprocess

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.storage import preallocate as prealloc_mod
from nova_disk_tuning.storage.preallocate import preallocate
from nova_disk_tuning.storage.probe import StorageProbe
from tests.functional.conftest import MiB, requires_root
from tests.functional.storage import util

pytestmark = requires_root


@pytest.mark.parametrize("filesystem", ["ext4", "xfs", "tmpfs"], indirect=True)
def test_full_allocation_of_a_new_file(filesystem):
    path = os.path.join(filesystem, "disk.raw")
    result = preallocate(path, 32 * MiB)
    assert result.allocated and result.method == "fallocate"
    st = os.stat(path)
    assert st.st_size == 32 * MiB
    assert st.st_blocks * 512 >= 32 * MiB
    assert StorageProbe().allocation(path).fully_allocated


@pytest.mark.parametrize("filesystem", ["ext4", "xfs"], indirect=True)
def test_fills_holes_of_an_existing_sparse_file(filesystem):
    path = os.path.join(filesystem, "disk.raw")
    util.fill(path, MiB)
    os.truncate(path, 16 * MiB)
    assert not StorageProbe().allocation(path).fully_allocated
    assert preallocate(path, 16 * MiB).allocated
    assert StorageProbe().allocation(path).fully_allocated
    assert util.read(path, 0, MiB) == util.expected_pattern(0, MiB)  # data kept


@pytest.mark.parametrize("filesystem", ["ext4", "xfs", "tmpfs"], indirect=True)
def test_keep_size_allocates_past_eof_for_overlays(filesystem):
    path = os.path.join(filesystem, "overlay.qcow2")
    util.fill(path, 196608)  # a qcow2 overlay's few clusters
    result = preallocate(path, 32 * MiB, keep_size=True)
    assert result.allocated and result.method == "fallocate-keep-size"
    st = os.stat(path)
    assert st.st_size == 196608
    assert st.st_blocks * 512 >= 32 * MiB


def test_enospc_is_reported_at_once_and_nothing_is_left(small_filesystem):
    path = os.path.join(small_filesystem.path, "disk.raw")
    with pytest.raises(exception.InsufficientStorage) as info:
        preallocate(path, 64 * MiB)
    assert path in str(info.value) and "bytes free" in str(info.value)
    assert not os.path.exists(path)


def test_enospc_from_the_kernel_removes_the_new_file(small_filesystem, monkeypatch):
    # Skip the free-space pre-check so fallocate itself hits ENOSPC after
    # allocating what fits: the rollback must return every block.
    monkeypatch.setattr(prealloc_mod, "_free", lambda fd: 1 << 60)
    free_before = os.statvfs(small_filesystem.path).f_bfree
    path = os.path.join(small_filesystem.path, "disk.raw")
    with pytest.raises(exception.InsufficientStorage):
        preallocate(path, 64 * MiB)
    assert not os.path.exists(path)
    assert os.listdir(small_filesystem.path) == ["lost+found"]
    assert os.statvfs(small_filesystem.path).f_bfree >= free_before


def test_enospc_with_keep_size_releases_blocks_past_eof(small_filesystem, monkeypatch):
    monkeypatch.setattr(prealloc_mod, "_free", lambda fd: 1 << 60)
    path = os.path.join(small_filesystem.path, "overlay.qcow2")
    util.fill(path, 196608)
    before = util.allocated(path)
    with pytest.raises(exception.InsufficientStorage):
        preallocate(path, 64 * MiB, keep_size=True)
    st = os.stat(path)
    assert st.st_size == 196608
    # All data blocks come back; ext4 may keep the one extent-tree block
    # (1 KiB on this small file system) that the big allocation needed.
    assert before <= util.allocated(path) <= before + 4096
    assert util.read(path, 0, 196608) == util.expected_pattern(0, 196608)


def test_ext2_cannot_fallocate_and_says_so(make_filesystem, caplog):
    mount = make_filesystem("ext2")
    path = os.path.join(mount.path, "disk.raw")
    with caplog.at_level(logging.WARNING, logger="nova_disk_tuning.storage.preallocate"):
        result = preallocate(path, 32 * MiB)
    assert not result.allocated and result.method == "none"
    assert "ext2" in result.reason and "EOPNOTSUPP" in result.reason
    assert any("Not preallocating" in r.getMessage() for r in caplog.records)
    st = os.stat(path)
    assert st.st_size == 32 * MiB  # a usable raw disk, sparse
    assert st.st_blocks * 512 < MiB  # no zeroes were written


def test_block_device_is_already_allocated(loop_device):
    loop = loop_device(size=MiB)
    result = preallocate(loop.path, MiB)
    assert result.allocated and result.method == "none"


def test_the_probe_is_shared_and_cached(filesystem, monkeypatch):
    probe = StorageProbe()
    preallocate(os.path.join(filesystem, "a"), MiB, probe=probe)
    calls = []
    monkeypatch.setattr(
        "nova_disk_tuning.storage.probe._fallocate_probe", lambda d: calls.append(d)
    )
    preallocate(os.path.join(filesystem, "b"), MiB, probe=probe)
    assert calls == []


def mapped(path: str) -> list[tuple[int, int]]:
    """[start, end) of every extent (written or not) from FIEMAP, as filefrag prints it."""
    out = subprocess.run(
        ["filefrag", "-v", "-b1", path], capture_output=True, text=True, check=True
    )
    found = re.findall(r"^\s*\d+:\s+(\d+)\.\.\s*(\d+):", out.stdout, re.M)
    return [(int(start), int(end) + 1) for start, end in found]


def covered(path: str, start: int, end: int) -> bool:
    position = start
    for first, last in sorted(mapped(path)):
        if first <= position < last:
            position = last
    return position >= end


@pytest.mark.parametrize("filesystem", ["ext4", "xfs"], indirect=True)
@pytest.mark.parametrize("keep_size", [False, True])
def test_a_repeat_fills_what_a_discard_punched_even_behind_blocks_past_eof(filesystem, keep_size):
    # Nova asks again at every hard reboot and start. st_blocks cannot tell
    # a hole: with keep_size, blocks past EOF can outnumber the hole below.
    path = os.path.join(filesystem, "disk.raw")
    util.fill(path, MiB)
    preallocate(path, 16 * MiB, keep_size=keep_size)
    assert covered(path, 0, 16 * MiB)
    fd = os.open(path, os.O_RDWR)
    try:
        punch = prealloc_mod.falloc.FALLOC_FL_PUNCH_HOLE | prealloc_mod.falloc.FALLOC_FL_KEEP_SIZE
        prealloc_mod.falloc.fallocate(fd, punch, MiB // 2, MiB // 4)  # inside the data
        if keep_size:
            prealloc_mod.falloc.fallocate(
                fd, prealloc_mod.falloc.FALLOC_FL_KEEP_SIZE, 16 * MiB, MiB
            )
    finally:
        os.close(fd)
    assert not covered(path, 0, 16 * MiB)
    if keep_size:
        assert util.allocated(path) >= 16 * MiB  # what a count of blocks would trust
    again = preallocate(path, 16 * MiB, keep_size=keep_size)
    assert again.allocated and again.method != "none"
    assert covered(path, 0, 16 * MiB)
    assert util.read(path, 0, MiB // 2) == util.expected_pattern(0, MiB // 2)
    assert util.read(path, MiB // 2, MiB // 4) == bytes(MiB // 4)  # discarded stays zero
