"""The C library, loaded once on first use, for the calls Python's os module lacks."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def libc() -> ctypes.CDLL:
    # Loaded on first use, not at import: importing the package must not
    # touch the C library (glibc is the only libc we need to find).
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
