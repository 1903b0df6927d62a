"""How much of a file is in the host's page cache right now.

``qemu-img convert`` reads its source fastest through the page cache when
the source is there already (the image Nova just downloaded into ``_base``),
and fastest with O_DIRECT when it is not (no copy through memory, no
read-ahead of data the page cache would evict again). The state changes with
every read, so it is asked each time, never remembered.

``cachestat(2)`` (Linux >= 6.5) counts the cached pages of a range without
touching the file. On older kernels (Debian 12 ships 6.1) ``mincore(2)`` on a
read-only mapping does the same page by page; mapping a file reads nothing.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import stat

from nova_disk_tuning.common.libc import libc
from nova_disk_tuning.common.units import GiB

# asm-generic syscall number, the same on x86_64 and arm64.
NR_CACHESTAT = 451
# mincore() is asked a window at a time: 1 GiB is a 256 KiB vector of 4 KiB pages.
_WINDOW = GiB
_PAGE = mmap.PAGESIZE
_PROT_READ = 0x1
_MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    ]


def cached_fraction(path: str) -> float | None:
    """The share (0..1) of ``path``'s bytes in the page cache; None when it cannot be told.

    None for anything but a non-empty regular file, and where neither
    cachestat nor mincore answers (the caller then keeps its default).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        pages = _cached_pages_cachestat(fd)
        if pages is None:
            pages = _cached_pages_mincore(fd, st.st_size)
        if pages is None:
            return None
        return min(1.0, pages * _PAGE / st.st_size)
    finally:
        os.close(fd)


def _cached_pages_cachestat(fd: int) -> int | None:
    """Cached pages of the whole file, or None where the kernel lacks cachestat."""
    call = libc().syscall
    call.restype = ctypes.c_long
    whole, result = _Range(0, 0), _Stat()  # len 0: to the end of the file
    code = call(
        ctypes.c_long(NR_CACHESTAT),
        ctypes.c_uint(fd),
        ctypes.byref(whole),
        ctypes.byref(result),
        ctypes.c_uint(0),
    )
    if code == 0:
        return int(result.nr_cache)
    # ENOSYS before Linux 6.5, EPERM under a seccomp filter; whatever the
    # errno, an unknown cache state is not worth failing a conversion for:
    # mincore gets its turn.
    return None


def _cached_pages_mincore(fd: int, size: int) -> int | None:
    lib = libc()
    lib.mmap.restype = ctypes.c_void_p
    lib.mmap.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    )
    lib.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    lib.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    cached = 0
    for offset in range(0, size, _WINDOW):
        length = min(_WINDOW, size - offset)
        address = lib.mmap(None, length, _PROT_READ, _MAP_SHARED, fd, offset)
        if address in (None, _MAP_FAILED):
            return None
        try:
            vector = ctypes.create_string_buffer(-(-length // _PAGE))
            if lib.mincore(address, length, vector) != 0:
                return None
            # One byte per page: bit 0 set when the page is resident, the
            # other bits reserved (zero), so non-zero bytes are cached pages.
            cached += len(vector.raw) - vector.raw.count(0)
        finally:
            lib.munmap(address, length)
    return cached
