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
from nova_disk_tuning.images.source import Source, open_source
from nova_disk_tuning.storage.copy import ExtentCopier

ProgressCallback = Callable[[float], None]


class Fetcher(Protocol):
    def fetch(self, source: str, dest: str, progress: ProgressCallback | None = None) -> int:
        """Write the image at ``source`` into the new file ``dest``; return its size."""


class LocalFileFetcher:
    """A local path or ``file://`` URL, copied extent by extent.

    Holes stay holes and the data goes through copy_file_range
    (:class:`nova_disk_tuning.storage.copy.ExtentCopier`); a block device is
    copied whole, as large as the device.
    """

    def __init__(self) -> None:
        self._copier = ExtentCopier()

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
                whole = source.kind == "block device"
                self._copier.copy(src_fd, dst_fd, size, whole=whole, progress=progress)
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
