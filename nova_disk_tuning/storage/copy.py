"""Copying a disk file at the cost of its data, not of its size or allocation.

A file's data extents are found with ``lseek(SEEK_DATA/SEEK_HOLE)``; holes,
and the allocated but never written extents of a preallocated disk, which
ext4 and xfs report as holes while none of their pages is cached, are
skipped, so the copy has holes there and reads as the source. The whole map
is taken before the first byte is read: reading a data extent lets readahead
cache the pages after it, and a cached page of an unwritten extent is data
to SEEK_DATA (a 4 GiB ``performance`` overlay with 410 MiB written copied
4096 MiB when the map was read while copying, 410 MiB when read first; 0.72
s instead of 6.8 s here). For the same reason :func:`copy_sparse` first drops
the source's clean cached pages (a backup or a guest with a host-cached disk
leaves them; ext4 then reports every cached page of an unwritten extent as
data, xfs and tmpfs do not). The data goes through ``copy_file_range``, which
the kernel may turn into a reflink or a server-side copy; across file systems
(EXDEV since Linux 5.19) plain reads and writes do, remembered per copier.
:class:`ExtentCopier` copies a block device whole (it has no extents); the
command copies regular files only.

GNU cp (coreutils 9.1) looks for holes only in a file whose blocks fall
short of its size, so it copies a fully preallocated raw disk byte for byte,
zeroes included. ``python -m nova_disk_tuning.storage.copy SRC DST`` is this
copy as a command (it imports nothing else of the package), for callers that
must not block on it, as nova-compute's event loop must not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
from collections.abc import Callable

MiB = 1 << 20  # nova_disk_tuning.common.units is not imported: see the command above
_CHUNK = 8 * MiB
# Refusals of copy_file_range as such, not of the copy: another file system
# (EXDEV), one that cannot (EOPNOTSUPP), a kernel without it (ENOSYS), and
# EINVAL for a pair of files it does not take (a special file, overlapping
# ranges of one file, or a file system before Linux 5.3 that allows it only
# within itself). Every other error is the copy's own and is raised.
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

ProgressCallback = Callable[[float], None]


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of each data extent of a regular file, the whole map at once."""
    extents = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                break
            raise
        offset = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, offset))
    return extents


class ExtentCopier:
    """Copies the data of one descriptor into another at the same offsets."""

    def __init__(self) -> None:
        self._copy_file_range = True

    def copy(
        self,
        src: int,
        dst: int,
        size: int,
        whole: bool = False,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Copy the first ``size`` bytes' data (``whole``: every byte); return the bytes copied.

        ``whole`` is for a block device: lseek(SEEK_DATA) on one fails with
        EINVAL (Linux's fixed_size_llseek knows only SET, CUR and END), and so
        does copy_file_range, which must not turn it off for regular files.
        """
        extents = [(0, size)] if whole else data_extents(src, size)
        copied = 0
        for start, end in extents:
            position = start
            while position < end:
                n = self._chunk(src, dst, min(_CHUNK, end - position), position, not whole)
                if n == 0:
                    raise OSError(errno.EIO, "the source shrank while it was copied")
                position += n
                copied += n
                if progress is not None:
                    progress(100.0 * position / size)
        return copied

    def _chunk(self, src: int, dst: int, length: int, offset: int, ranged: bool) -> int:
        if ranged and self._copy_file_range:
            try:
                return os.copy_file_range(src, dst, length, offset, offset)
            except OSError as exc:
                if exc.errno not in _NO_COPY_FILE_RANGE:
                    raise
                self._copy_file_range = False
        data = os.pread(src, length, offset)
        view = memoryview(data)
        while view:
            written = os.pwrite(dst, view, offset)
            view, offset = view[written:], offset + written
        return len(data)


def copy_sparse(src: str, dest: str) -> int:
    """Copy the regular file ``src`` to the new file ``dest`` (same mode); return the data bytes.

    ``dest`` must not exist (O_EXCL): nothing is overwritten, and a failed
    copy removes what it created (a SIGKILL leaves it: the caller's directory
    is its own, and Nova removes it when the resize fails).
    """
    # O_NONBLOCK: a FIFO in its place is refused below instead of waited on.
    src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(src_fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{src} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        # Clean cached pages out before the map is taken (see above); dirty
        # pages stay, and are data.
        os.posix_fadvise(src_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        dst_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            copied = ExtentCopier().copy(src_fd, dst_fd, st.st_size)
            os.ftruncate(dst_fd, st.st_size)
        except BaseException:
            os.close(dst_fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)
            raise
        os.close(dst_fd)
    finally:
        os.close(src_fd)
    return copied


def sparse_copy_argv(src: str, dest: str) -> list[str]:
    """The command that runs :func:`copy_sparse` in a process of its own."""
    return [sys.executable, "-m", __name__, src, dest]


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through copy_sparse's clean-up


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m nova_disk_tuning.storage.copy SRC DST", file=sys.stderr)
        return 2
    src, dest = argv
    signal.signal(signal.SIGTERM, _terminated)
    try:
        copy_sparse(src, dest)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"cannot copy {src} to {dest}: {exc.strerror or exc}{where}; the source must be a "
            "regular file and the destination new, in a directory with room for the data",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
