"""Block-device ioctls (include/uapi/linux/fs.h) with fcntl.ioctl: no C extension."""

from __future__ import annotations

import fcntl
import os
import stat
import struct

# _IO(0x12, n) is (0x12 << 8) | n; _IOR adds the direction and the argument
# size: BLKGETSIZE64 = _IOR(0x12, 114, size_t) on 64-bit Linux.
BLKSSZGET = 0x1268
BLKZEROOUT = 0x127F
BLKGETSIZE64 = 0x80081272

_RANGE = struct.Struct("=QQ")  # uint64_t range[2] = {start, length}


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def logical_block_size(fd: int) -> int:
    """The device's logical block size: the unit of O_DIRECT I/O and ioctl ranges."""
    buf = fcntl.ioctl(fd, BLKSSZGET, struct.pack("=i", 0))
    return int(struct.unpack("=i", buf)[0])


def device_size(fd: int) -> int:
    buf = fcntl.ioctl(fd, BLKGETSIZE64, struct.pack("=Q", 0))
    return int(struct.unpack("=Q", buf)[0])


def zeroout(fd: int, offset: int, length: int) -> None:
    """Zero a range: the kernel uses WRITE ZEROES if the device has it, else writes zeroes.

    Offset and length must be multiples of the logical block size (EINVAL).
    The kernel drops the page cache of the range itself.
    """
    fcntl.ioctl(fd, BLKZEROOUT, _RANGE.pack(offset, length))
