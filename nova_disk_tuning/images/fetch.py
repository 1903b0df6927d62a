"""Fetchers: bring an image's bytes from where it lives to a local file.

The cache picks a fetcher by the source's URL scheme, so an image service
(HTTP, Glance) plugs in by adding one class with ``fetch``.
"""

from __future__ import annotations

import errno
import os
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Protocol

from nova_disk_tuning import exception

ProgressCallback = Callable[[float], None]
_CHUNK = 8 << 20
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class Fetcher(Protocol):
    def fetch(self, source: str, dest: str, progress: ProgressCallback | None = None) -> int:
        """Write the image at ``source`` into the new file ``dest``; return its size."""


class LocalFileFetcher:
    """A local path or ``file://`` URL, copied extent by extent.

    Holes stay holes (SEEK_DATA/SEEK_HOLE) and the data goes through
    copy_file_range, which the kernel may turn into a reflink or a
    server-side copy. Across file systems the kernel refuses it (EXDEV since
    Linux 5.19); then plain reads and writes do, remembered per fetcher.
    """

    def __init__(self) -> None:
        self._copy_file_range = True

    def fetch(self, source: str, dest: str, progress: ProgressCallback | None = None) -> int:
        path = local_path(source)
        try:
            src_fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise exception.ImageNotFound(path=path) from None
        try:
            size = os.fstat(src_fd).st_size
            dst_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                self._copy(src_fd, dst_fd, size, progress)
                os.ftruncate(dst_fd, size)
            finally:
                os.close(dst_fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                stat = os.statvfs(os.path.dirname(dest))
                raise exception.InsufficientStorage(
                    path=dest, wanted=size, free=stat.f_bavail * stat.f_frsize
                ) from None
            raise exception.ImageError(path=path, reason=f"copy to {dest} failed: {exc}") from None
        finally:
            os.close(src_fd)
        return size

    def _copy(self, src: int, dst: int, size: int, progress: ProgressCallback | None) -> None:
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            end = os.lseek(src, start, os.SEEK_HOLE)
            position = start
            while position < end:
                copied = self._copy_chunk(src, dst, min(_CHUNK, end - position), position)
                if copied == 0:
                    raise OSError(errno.EIO, "source shrank while copying")
                position += copied
                if progress is not None:
                    progress(100.0 * position / size)
            offset = end

    def _copy_chunk(self, src: int, dst: int, length: int, offset: int) -> int:
        if self._copy_file_range:
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
