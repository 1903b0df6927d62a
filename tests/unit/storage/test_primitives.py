"""fallocate, kernel facts and error names: no root needed."""

from __future__ import annotations

import errno
import os

import pytest

from nova_disk_tuning.storage import fallocate as falloc
from nova_disk_tuning.storage import kernel


def test_flag_values_are_the_kernels():
    assert (falloc.FALLOC_FL_KEEP_SIZE, falloc.FALLOC_FL_PUNCH_HOLE) == (0x01, 0x02)
    assert falloc.FALLOC_FL_ZERO_RANGE == 0x10


def test_fallocate_allocates_a_real_file(tmp_path):
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        falloc.fallocate(fd, falloc.FALLOC_FL_KEEP_SIZE, 0, 1 << 20)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    assert st.st_size == 0
    assert st.st_blocks * 512 >= 1 << 20


def test_fallocate_raises_oserror_with_errno(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            falloc.fallocate(fd, 0, 0, 4096)
    finally:
        os.close(fd)
    assert info.value.errno == errno.EBADF


@pytest.mark.parametrize(("offset", "length"), [(-1, 10), (0, 0)])
def test_fallocate_rejects_bad_ranges(offset, length):
    with pytest.raises(ValueError):
        falloc.fallocate(0, 0, offset, length)


def test_errname_prefers_eopnotsupp():
    assert falloc.errname(errno.EOPNOTSUPP) == "EOPNOTSUPP"
    assert falloc.errname(errno.ENOSPC) == "ENOSPC"


def test_io_uring_answer_agrees_with_the_sysctl():
    support = kernel.io_uring_support()
    assert support.reason
    try:
        with open(kernel.IO_URING_DISABLED) as f:
            setting = int(f.read())
    except FileNotFoundError:
        return
    if setting == 2:
        assert not support.usable and "io_uring_disabled=2" in support.reason
    if support.usable:
        assert setting in (0, 1)
