"""Fetchers: bring an image's bytes from where it lives to a local file.

The cache picks a fetcher by the source's URL scheme, so an image service
(HTTP, Glance) plugs in by adding one class with ``fetch``.
"""

from __future__ import annotations

import errno
import os
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from nova_disk_tuning import exception
from nova_disk_tuning.common.units import MiB
from nova_disk_tuning.images.source import Source, open_source

ProgressCallback = Callable[[float], None]
_CHUNK = 8 * MiB
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class Fetcher(Protocol):
    def fetch(self, source: str, dest: str, progress: ProgressCallback | None = None) -> int:
        """Write the image at ``source`` into the new file ``dest``; return its size."""


class LocalFileFetcher:
    """A local path or ``file://`` URL, copied extent by extent.

    Holes stay holes (SEEK_DATA/SEEK_HOLE) and the data goes through
    copy_file_range, which the kernel may turn into a reflink or a
    server-side copy. Across file systems the kernel refuses it (EXDEV since
    Linux 5.19); then plain reads and writes do, remembered per fetcher. A
    block device is copied whole, as large as the device, with reads and
    writes.
    """

    def __init__(self) -> None:
        self._copy_file_range = True

    def fetch(self, source: str, dest: str, progress: ProgressCallback | None = None) -> int:
        path = local_path(source)
        # Checked before the first read and copied from the checked
        # descriptor: a FIFO would block the copy forever, /dev/zero would
        # never end, an empty or truncated image would become an all-zero disk.
        with open_source(path) as (src_fd, checked):
            self._copy_into(src_fd, checked, dest, progress)
        return checked.size

    def _copy_into(
        self, src_fd: int, source: Source, dest: str, progress: ProgressCallback | None
    ) -> None:
        size = source.size
        try:
            # Never readable by more than the source (a 0600 image stays 0600).
            dst_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, source.copy_mode)
            try:
                self._copy(src_fd, dst_fd, source, progress)
                os.ftruncate(dst_fd, size)
            finally:
                os.close(dst_fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                stat = os.statvfs(os.path.dirname(dest))
                raise exception.InsufficientStorage(
                    path=dest, wanted=size, free=stat.f_bavail * stat.f_frsize
                ) from None
            raise exception.ImageError(
                path=source.path, reason=f"copy to {dest} failed: {exc}"
            ) from None

    def _copy(self, src: int, dst: int, source: Source, progress: ProgressCallback | None) -> None:
        # A block device is copied whole with reads and writes: lseek(SEEK_DATA)
        # on one fails with EINVAL (Linux's fixed_size_llseek knows only SET,
        # CUR and END) and so does copy_file_range (not a regular file), which
        # must not turn copy_file_range off for the files this fetcher copies.
        block = source.kind == "block device"
        extents = [(0, source.size)] if block else _data_extents(src, source.size)
        for start, end in extents:
            position = start
            while position < end:
                length = min(_CHUNK, end - position)
                copied = self._copy_chunk(src, dst, length, position, ranged=not block)
                if copied == 0:
                    raise OSError(errno.EIO, "source shrank while copying")
                position += copied
                if progress is not None:
                    progress(100.0 * position / source.size)

    def _copy_chunk(self, src: int, dst: int, length: int, offset: int, ranged: bool) -> int:
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


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each data extent of a regular file: its holes are skipped."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                return
            raise
        offset = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, offset


def local_path(source: str) -> str:
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        return urllib.parse.unquote(parsed.path)
    return source


class FetcherRegistry:
    """Fetchers by URL scheme; a bare path is scheme ``""``."""

    def __init__(self, fetchers: Mapping[str, Fetcher] | None = None) -> None:
        local = LocalFileFetcher()
        self._fetchers: dict[str, Fetcher] = {"": local, "file": local}
        self._fetchers.update(fetchers or {})

    def register(self, scheme: str, fetcher: Fetcher) -> None:
        self._fetchers[scheme] = fetcher

    def for_source(self, source: str) -> Fetcher:
        scheme = urllib.parse.urlparse(source).scheme
        # "C:" style one-letter schemes do not occur on Linux; a path has none.
        fetcher = self._fetchers.get(scheme)
        if fetcher is None:
            known = ", ".join(sorted(s or "(path)" for s in self._fetchers))
            raise exception.ImageError(
                path=source,
                reason=f"no fetcher for URL scheme {scheme!r} (known: {known}). "
                "Use a local path or a file:// URL.",
            )
        return fetcher
