"""Probe, zero and preallocate on the test's own directory (any file system, no root)."""

from __future__ import annotations

import os

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.storage.preallocate import preallocate
from nova_disk_tuning.storage.probe import PROBE_PREFIX, StorageProbe
from nova_disk_tuning.storage.zero import Zeroer


def test_probe_leaves_nothing_and_caches(tmp_path):
    probe = StorageProbe()
    modes = probe.fallocate_modes(str(tmp_path))
    assert modes <= {"zero_range", "punch_hole", "allocate"}
    assert isinstance(probe.supports_direct_io(str(tmp_path)), bool)
    assert probe.fs_type(str(tmp_path)) not in ("", "unknown")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(PROBE_PREFIX)]
    assert probe._modes and probe._direct_io  # remembered in the object


def test_allocation_of_a_sparse_file(tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    allocation = StorageProbe().allocation(str(path))
    assert allocation.size == 1 << 20
    assert allocation.allocated == 0 and not allocation.fully_allocated


def test_zero_a_file(tmp_path):
    path = tmp_path / "disk"
    path.write_bytes(b"\x55" * 65536)
    result = Zeroer().zero(str(path), 100, 1000)
    data = path.read_bytes()
    assert data[100:1100] == bytes(1000)
    assert data[:100] == b"\x55" * 100 and data[1100:] == b"\x55" * (65536 - 1100)
    assert result.bytes == 1000 and result.method


def test_zero_errors(tmp_path):
    with pytest.raises(exception.StorageError, match="does not exist"):
        Zeroer().zero(str(tmp_path / "absent"))
    path = tmp_path / "disk"
    path.write_bytes(b"x" * 10)
    with pytest.raises(exception.InvalidRange, match="negative"):
        Zeroer().zero(str(path), -1, 5)
    assert Zeroer().zero(str(path), 10).method == "none"  # nothing past EOF by default


def test_preallocate_arguments(tmp_path):
    with pytest.raises(exception.InvalidRange, match="positive"):
        preallocate(str(tmp_path / "d"), 0)
    with pytest.raises(exception.StorageError, match="create it first"):
        preallocate(str(tmp_path / "missing" / "d"), 4096)
    assert not (tmp_path / "d").exists()


def test_zero_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(exception.StorageError, match="not a regular file or block device"):
        Zeroer().zero(str(tmp_path))
