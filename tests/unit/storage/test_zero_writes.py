"""The last resort of fast zero, pwrite of zero buffers, on a device that fails writes.

/dev/full answers every write with ENOSPC: the error must reach the caller as
an OSError (errno, failing offset), not be masked by a BufferError from
closing a buffer that a memoryview still exports.
"""

import errno
import os

import pytest

from nova_disk_tuning.storage import zero


@pytest.fixture
def dev_full():
    fd = os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 4096), (4096, 3 * zero.WRITE_CHUNK), (100, 5000)]
)
def test_write_failure_is_the_oserror(dev_full, offset, length):
    with pytest.raises(OSError) as info:
        zero._write_range(dev_full, offset, length)
    assert info.type is OSError
    assert info.value.errno == errno.ENOSPC
    assert f"offset {offset}" in str(info.value)


def test_write_zeroes_with_edges(dev_full):
    # Unaligned: the buffered edge writes fail first, with their own offset.
    with pytest.raises(OSError) as info:
        zero._write_zeroes(dev_full, 100, 10000)
    assert info.value.errno == errno.ENOSPC
