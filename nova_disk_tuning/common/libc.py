"""The C library, loaded once on first use, for the calls Python's os module lacks."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def libc() -> ctypes.CDLL:
    """glibc by its soname; else the process's own symbols (its C library among them).

    Loaded on first use, not at import: importing the package must not touch
    the C library. Not through ``ctypes.util.find_library``, which runs
    ``os.uname()`` and ldconfig to find what the soname already names (and
    which Nova's test harness forbids tests to call).
    """
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc
        return ctypes.CDLL(None, use_errno=True)
