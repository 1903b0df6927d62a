"""File helpers whose only error is the one they expect."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import stat
from typing import Any

from nova_disk_tuning.common.libc import libc

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def kind_of(mode: int) -> str:
    """What ``st_mode`` says a file is, as messages name it ("a FIFO", "a directory")."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def remove_if_exists(path: str) -> bool:
    """Unlink ``path``; False if it was already gone (any other error is raised)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def fsync_path(path: str) -> None:
    """Make a file's (or a directory's) content durable, by its name."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str) -> None:
    """Make a create, rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flock_held(path: str) -> bool:
    """Whether a live process holds a ``flock`` on ``path`` (False if it is missing).

    Asked by trying an exclusive lock without waiting, and letting it go at
    once: flock locks die with their holder, so only a running owner answers.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def narrow_mode(path: str, most: int) -> None:
    """Take from ``path`` every permission bit ``most`` lacks (never adds one)."""
    os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & most)


@functools.cache
def _renameat2() -> Any:
    """glibc's renameat2 (2.28), typed once; None where the C library lacks it."""
    try:
        function = libc().renameat2
    except AttributeError:
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    return function


def rename_noreplace(src: str, dst: str, is_dir: bool) -> None:
    """rename(2) that fails with EEXIST when anything at all is at ``dst``."""
    function = _renameat2()
    if function is not None:
        result = function(
            _AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        # EINVAL: this file system has no RENAME_NOREPLACE (NFS, older FUSE).
        if code not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(code, os.strerror(code), dst)
    if is_dir:
        # A directory cannot be linked: rename, which refuses a non-empty
        # target; an empty one it would replace is refused first.
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
        os.rename(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EOPNOTSUPP):
            raise OSError(errno.EOPNOTSUPP, "the file system has no hard links", dst) from None
        raise
    os.unlink(src)
