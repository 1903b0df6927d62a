"""Page-cache residency of a file, on the real page cache of this machine."""

import os

import pytest

from nova_disk_tuning.storage import pagecache

SIZE = 8 << 20


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "image"
    path.write_bytes(os.urandom(SIZE))
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    if pagecache.cached_fraction(str(path)) is None:
        pytest.skip("neither cachestat nor mincore answers here")
    return str(path)


def _evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_cold_then_warm(data_file):
    _evict(data_file)
    cold = pagecache.cached_fraction(data_file)
    if cold == 1.0:
        pytest.skip("this file system keeps files in memory (tmpfs): nothing to evict")
    assert cold < 0.5
    with open(data_file, "rb") as handle:
        handle.read()
    assert pagecache.cached_fraction(data_file) == 1.0


def test_cachestat_and_mincore_agree(data_file):
    with open(data_file, "rb") as handle:
        handle.read(SIZE // 2)  # about half, read-ahead decides the rest
    fd = os.open(data_file, os.O_RDONLY)
    try:
        by_mincore = pagecache._cached_pages_mincore(fd, SIZE)
        by_cachestat = pagecache._cached_pages_cachestat(fd)
    finally:
        os.close(fd)
    assert by_mincore is not None and by_mincore > 0
    if by_cachestat is not None:  # Linux >= 6.5
        assert by_cachestat == by_mincore


@pytest.mark.parametrize("kind", ["missing", "empty", "directory"])
def test_nothing_to_tell(tmp_path, kind):
    path = tmp_path / "x"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    assert pagecache.cached_fraction(str(path)) is None
