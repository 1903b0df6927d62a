"""fallocate(2) through ctypes: Python's os.posix_fallocate has no mode flags.

The flags are the kernel's (include/uapi/linux/falloc.h). A mode a file
system or device does not implement fails with EOPNOTSUPP; callers decide
what that means, this module only reports it as an OSError with its errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc: ctypes.CDLL | None = None


def _fallocate64():
    # Loaded on first use, not at import: importing the package must not
    # touch the C library (and glibc is the only libc we need to find).
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.fallocate64.argtypes = (
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int64,
            ctypes.c_int64,
        )
        _libc.fallocate64.restype = ctypes.c_int
    return _libc.fallocate64


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """Call fallocate(fd, mode, offset, length); raise OSError on failure."""
    if offset < 0 or length <= 0:
        raise ValueError(f"fallocate needs offset >= 0 and length > 0, got {offset}, {length}")
    if _fallocate64()(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def errname(code: int | None) -> str:
    """The errno's name for messages: EOPNOTSUPP, not the alias ENOTSUP errno picks."""
    if code == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(code or 0, str(code))
