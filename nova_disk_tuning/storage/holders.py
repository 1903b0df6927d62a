"""Open a disk for writing only when nothing else holds it.

Every write the storage layer makes to a disk it did not just create (``zero``,
``preallocate``, the LVM wipe) opens it here, and every check reads the
descriptor that is then written, never the path again:

* only a regular file or a block device is opened (``stat`` first: opening a
  character device can act on it, ``/dev/watchdog`` arms; a FIFO blocks);
* a block device is opened ``O_EXCL``: the kernel refuses (EBUSY) one that
  is mounted, an active swap device or a member of device-mapper or md, and
  nobody can mount it while it is open;
* a regular file is refused when it is the backing file of a loop device or
  an active swap file: writing under a file system that another device
  presents corrupts it;
* anything QEMU or qemu-img has open is refused: they take OFD locks in
  bytes 100 to 299 of every image they open (QEMU's file-posix locking), a
  running guest on its disk and on its backing files alike.

The image cache adds what only it knows (a base that an overlay names):
:meth:`nova_disk_tuning.images.cache.ImageCache.holders`.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import re
import stat
import struct

from nova_disk_tuning import exception
from nova_disk_tuning.storage.fallocate import errname

# QEMU's image locks (block/file-posix.c): RAW_LOCK_PERM_BASE 100 and
# RAW_LOCK_SHARED_BASE 200, one byte per permission.
QEMU_LOCK_START = 100
QEMU_LOCK_LENGTH = 200
_FLOCK = "hhqqi4x"  # struct flock on Linux x86_64/aarch64: type, whence, start, len, pid
_F_WRLCK, _F_UNLCK = fcntl.F_WRLCK, fcntl.F_UNLCK
_LOOP_BACKING = "/sys/block/loop*/loop/backing_file"
_SWAPS = "/proc/swaps"
_OCTAL = re.compile(r"\\([0-7]{3})")


def open_for_writing(path: str, operation: str) -> int:
    """``path`` opened O_RDWR (its descriptor), or StorageError naming what holds it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise exception.StorageError(
            operation=operation, path=path, reason="it does not exist; check the path"
        ) from None
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise exception.StorageError(
            operation=operation,
            path=path,
            reason="it is not a regular file or block device; give a disk image or device",
        )
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_EXCL if stat.S_ISBLK(mode) else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise _in_use(operation, path, "the kernel holds it (mounted, swap or a dm/md member)")
        raise exception.StorageError(
            operation=operation,
            path=path,
            reason=f"cannot open it for writing: {exc.strerror} ({errname(exc.errno)})",
        ) from exc
    try:
        # The descriptor is what is written: check it, not the path again.
        opened = os.fstat(fd)
        if not (stat.S_ISREG(opened.st_mode) or stat.S_ISBLK(opened.st_mode)):
            raise exception.StorageError(
                operation=operation, path=path, reason="it changed into something else"
            )
        holder = _holder(fd, opened)
        if holder:
            raise _in_use(operation, path, holder)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def holder_of(fd: int) -> str | None:
    """What holds the file or device open as ``fd`` (None: nothing this can see)."""
    return _holder(fd, os.fstat(fd))


def _holder(fd: int, st: os.stat_result) -> str | None:
    locked = qemu_lock_holder(fd)
    if locked:
        return locked
    if stat.S_ISREG(st.st_mode):
        for backing, loop in _loop_backing_files():
            if _same_file(backing, st):
                return f"it is the backing file of {loop}"
        for swap in _swap_files():
            if _same_file(swap, st):
                return "it is an active swap file"
    return None


def qemu_lock_holder(fd: int) -> str | None:
    """``QEMU (pid N) has it open`` when a QEMU image lock is on it, else None."""
    request = struct.pack(_FLOCK, _F_WRLCK, os.SEEK_SET, QEMU_LOCK_START, QEMU_LOCK_LENGTH, 0)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, request)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP):
            return None  # no locks here (some FUSE and network file systems)
        raise
    kind, _, _, _, pid = struct.unpack(_FLOCK, answer)
    if kind == _F_UNLCK:
        return None
    # OFD locks report pid -1: who holds one is not known, only that it is held.
    who = f" (pid {pid})" if pid > 0 else ""
    return f"QEMU or qemu-img{who} has it open (an image lock is held on it)"


def _loop_backing_files() -> list[tuple[str, str]]:
    found = []
    for entry in glob.glob(_LOOP_BACKING):
        try:
            with open(entry, "rb") as handle:
                backing = os.fsdecode(handle.read().rstrip(b"\n"))
        except OSError:
            continue  # detached meanwhile
        loop = "/dev/" + entry.split("/")[3]
        found.append((backing.removesuffix(" (deleted)"), loop))
    return found


def _swap_files() -> list[str]:
    try:
        with open(_SWAPS, "rb") as handle:
            lines = handle.read().splitlines()[1:]
    except FileNotFoundError:
        return []
    names = (os.fsdecode(line.split()[0]) for line in lines if line.split())
    return [_OCTAL.sub(lambda m: chr(int(m.group(1), 8)), name) for name in names]


def _same_file(path: str, st: os.stat_result) -> bool:
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def _in_use(operation: str, path: str, why: str) -> exception.StorageError:
    return exception.StorageError(
        operation=operation,
        path=path,
        reason=f"it is in use: {why}. Nothing was written; stop what holds it first",
    )
