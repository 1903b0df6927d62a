"""StorageProbe against real file systems and block devices."""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.storage import probe as probe_mod
from nova_disk_tuning.storage.probe import PROBE_PREFIX, StorageProbe
from tests.functional.conftest import FS_KINDS, MiB, requires_root

pytestmark = requires_root

MODES = {
    "ext4": {"zero_range", "punch_hole", "allocate"},
    "xfs": {"zero_range", "punch_hole", "allocate"},
    "tmpfs": {"punch_hole", "allocate"},
    "ext2": {"punch_hole"},
}


def _kernel_direct_io(directory: str) -> bool:
    """What the kernel does, asked independently of the probe."""
    name = os.path.join(directory, "independent-check")
    buf = mmap.mmap(-1, 4096)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
        try:
            os.write(fd, buf)
        finally:
            os.close(fd)
        return True
    except OSError as exc:
        assert exc.errno == errno.EINVAL
        return False
    finally:
        if os.path.exists(name):
            os.unlink(name)


@pytest.mark.parametrize("kind", FS_KINDS)
def test_file_systems(make_filesystem, kind):
    mount = make_filesystem(kind)
    probe = StorageProbe()
    assert probe.fs_type(mount.path) == kind
    assert probe.fallocate_modes(mount.path) == MODES[kind]
    assert probe.supports_direct_io(mount.path) == _kernel_direct_io(mount.path)
    if kind == "ext4":
        assert probe.supports_direct_io(mount.path) is True
    assert os.listdir(mount.path) in ([], ["lost+found"]), "probe files remain"


def test_a_file_is_probed_through_its_directory(filesystem):
    path = os.path.join(filesystem, "disk.raw")
    with open(path, "wb") as f:
        f.truncate(MiB)
    probe = StorageProbe()
    assert probe.supports_direct_io(path) is True
    assert probe.fallocate_modes(path) == MODES["ext4"]
    assert probe.fs_type(path) == "ext4"


def test_missing_directory_means_no_direct_io(tmp_path):
    assert StorageProbe().supports_direct_io(str(tmp_path / "absent")) is False
    with pytest.raises(exception.StorageError, match="no such file"):
        StorageProbe().fallocate_modes(str(tmp_path / "absent"))


def test_results_are_cached_per_file_system(filesystem, monkeypatch):
    probe = StorageProbe()
    first = (
        probe.supports_direct_io(filesystem),
        probe.fallocate_modes(filesystem),
        probe.fs_type(filesystem),
    )
    opened: list[str] = []
    real_open = os.open

    def counting_open(path, *args, **kwargs):
        opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]))
    os.mkdir(os.path.join(filesystem, "sub"))  # same file system, other path
    for path in (filesystem, os.path.join(filesystem, "sub")):
        again = (
            probe.supports_direct_io(path),
            probe.fallocate_modes(path),
            probe.fs_type(path),
        )
        assert again == first
    assert opened == [], "a cached answer must not do I/O"


def test_probe_file_removed_when_the_probe_fails(filesystem, monkeypatch):
    def failing(fd, mode, offset, length):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(probe_mod, "fallocate", failing)
    with pytest.raises(exception.StorageError, match="EIO"):
        StorageProbe().fallocate_modes(filesystem)
    assert not [n for n in os.listdir(filesystem) if n.startswith(PROBE_PREFIX)]


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_block_devices(loop_device, sector_size):
    loop = loop_device(sector_size=sector_size, size=4 * MiB)
    probe = StorageProbe()
    assert probe.is_block_device(loop.path)
    assert probe.fs_type(loop.path) == "block"
    assert probe.supports_direct_io(loop.path) is True
    assert probe.fallocate_modes(loop.path) == {"zero_range", "punch_hole"}
    allocation = probe.allocation(loop.path)
    assert allocation.size == 4 * MiB and allocation.fully_allocated


def test_allocation_follows_the_file(filesystem):
    path = os.path.join(filesystem, "disk.raw")
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
    probe = StorageProbe()
    sparse = probe.allocation(path)
    assert sparse.size == 8 * MiB and sparse.allocated == 0 and not sparse.fully_allocated
    os.posix_fallocate(os.open(path, os.O_RDWR), 0, 8 * MiB)
    full = probe.allocation(path)  # not cached: the state changed
    assert full.allocated >= 8 * MiB and full.fully_allocated
