"""fallocate(2) through ctypes: Python's os.posix_fallocate has no mode flags.

The flags are the kernel's (include/uapi/linux/falloc.h). A mode a file
system or device does not implement fails with EOPNOTSUPP; callers decide
what that means, this module only reports it as an OSError with its errno.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Callable

from nova_disk_tuning.common.libc import libc

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


@functools.cache
def _fallocate64() -> Callable[..., int]:
    # Looked up on first use, not at import: importing the package must not
    # touch the C library.
    function = libc().fallocate64
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    function.restype = ctypes.c_int
    return function


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
