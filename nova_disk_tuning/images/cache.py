"""The per-host cache of base images: fetched once, checked, converted, shared.

Layout (Nova's): ``$instances_path/<[image_cache] subdirectory_name>/<sha1(image id)>``
holds the image; ``<sha1>.info`` beside it records its format and origin.
Lock files live in ``$instances_path/locks``.

Crash safety: an entry is built in a stage beside it
(:mod:`~nova_disk_tuning.common.staging`: a hidden directory whose lock dies
with its owner), fsynced, and renamed into place, then the directory is
fsynced; so the final name only ever holds a complete image. The entry lock
is an fcntl lock (oslo.concurrency); the entry's next fetch and ``prune``
remove the stages whose owner died.

The files of one entry (its record, its use lock) are handled in
:mod:`~nova_disk_tuning.images.cache_entry`.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import glob
import hashlib
import os
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common import locks, staging
from nova_disk_tuning.common.files import fsync_dir, remove_if_exists
from nova_disk_tuning.images import diskops, fetch, inspection
from nova_disk_tuning.images.cache_entry import (
    ENTRY_NAME,
    mark_in_use,
    meta_path,
    qcow2_backing_file,
    read_meta,
    use_lock_path,
    used_by_a_spawn,
    write_meta,
)
from nova_disk_tuning.images.qemu_img import ConvertResult, QemuImg

LOG = logging.getLogger(__name__)

# <sha1>.<pid>.part / .tmp: where releases before the stages fetched; removed
# under the entry's lock, which every fetch of that entry held.
_LEGACY_PARTIAL = re.compile(r"([0-9a-f]{40})(?:\.info)?\.[0-9]+\.(?:part|tmp)")


@dataclasses.dataclass
class CachedImage:
    path: str
    format: str
    virtual_size: int
    created: bool  # built by this call (False: an existing entry was reused)
    image_id: str = ""
    conversion: ConvertResult | None = None
    seconds: float = 0.0  # fetch + checks + conversion, when created

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CacheEntry:
    path: str
    image_id: str
    format: str
    virtual_size: int
    disk_usage: int  # bytes allocated on the host
    last_used: float  # mtime, touched on every use


class ImageCache:
    def __init__(
        self,
        conf: cfg.ConfigOpts,
        qemu_img: QemuImg | None = None,
        fetchers: Mapping[str, fetch.Fetcher] | None = None,
        image_safety: inspection.ImageSafety | None = None,
    ) -> None:
        self.conf = conf
        self.qemu_img = qemu_img or QemuImg(conf)
        self.fetchers = fetch.FetcherRegistry(fetchers)
        self.safety = image_safety or inspection.ImageSafety()

    # -- where things are (read from config when used) ---------------------------

    @property
    def instances_path(self) -> str:
        # Absolute, always: entry paths become qcow2 backing file names, and
        # qemu resolves a relative backing name against the overlay's own
        # directory, not against the directory the spawn ran in.
        configured: str = self.conf.instances_path
        return os.path.abspath(configured)

    @property
    def base_dir(self) -> str:
        return os.path.join(self.instances_path, self.conf.image_cache.subdirectory_name)

    @property
    def lock_dir(self) -> str:
        return os.path.join(self.instances_path, "locks")

    def entry_path(self, image_id: str) -> str:
        return os.path.join(self.base_dir, hashlib.sha1(image_id.encode()).hexdigest())

    def _lock(self, path: str, blocking: bool = True) -> Any:
        return locks.external_lock(f"image-{os.path.basename(path)}", self.lock_dir, blocking)

    # -- fetch ---------------------------------------------------------------------

    def fetch(
        self,
        image_id: str,
        source: str,
        declared_format: str | None,
        max_virtual_size: int | None = None,
        progress: Callable[[float], None] | None = None,
        hold: contextlib.ExitStack | None = None,
    ) -> CachedImage:
        """The cached image ``image_id``, built from ``source`` if not cached yet.

        Concurrent callers (threads or processes) of one image wait for the
        first and reuse its result. With ``hold``, the entry is marked in use
        until that stack closes, so ``prune`` cannot remove it while the
        caller still makes disks from it.
        """
        path = self.entry_path(image_id)
        os.makedirs(self.base_dir, exist_ok=True)
        os.makedirs(self.lock_dir, exist_ok=True)
        with self._lock(path):
            cached = self._reuse(image_id, path, max_virtual_size)
            if cached is None:
                self._remove_stale(path)
                limiter = diskops.DiskOpsLimiter(self.conf, self.lock_dir)
                with limiter.slot(f"image {image_id}"):
                    cached = self._build(
                        image_id, path, source, declared_format, max_virtual_size, progress
                    )
            if hold is not None:
                # Taken before the entry lock is released: no prune in between.
                hold.enter_context(mark_in_use(path))
            return cached

    def _reuse(self, image_id: str, path: str, max_size: int | None) -> CachedImage | None:
        meta = read_meta(path)
        if meta is None or not os.path.exists(path):
            if os.path.exists(path):
                LOG.warning("cached %s has no record of its format: rebuilding it", path)
            return None
        if max_size is not None and meta["virtual_size"] > max_size:
            raise exception.ImageUnacceptable(
                path=path,
                reason=f"its virtual size {meta['virtual_size']} bytes is larger than "
                f"the allowed {max_size} bytes (the flavor's disk). Use a larger flavor.",
            )
        os.utime(path)
        LOG.info("image %s: reusing cached %s", image_id, path)
        return CachedImage(path, meta["format"], meta["virtual_size"], False, image_id)

    def _build(
        self,
        image_id: str,
        path: str,
        source: str,
        declared_format: str | None,
        max_size: int | None,
        progress: Callable[[float], None] | None,
    ) -> CachedImage:
        started = time.monotonic()
        with staging.Stage(path) as stage:
            try:
                fmt, size, conversion, built = self._build_in(
                    stage, image_id, source, declared_format, max_size, progress
                )
            except exception.ImageUnacceptable as exc:
                if exc.kwargs.get("path") != stage.path:
                    raise
                # Name the operator's image, not our copy of it in the stage.
                raise exception.ImageUnacceptable(
                    path=source, reason=exc.kwargs.get("reason", str(exc))
                ) from None
            write_meta(path, {"image_id": image_id, "format": fmt, "virtual_size": size})
            # Under the entry lock: what is at the final name has no record
            # of its format (checked by _reuse), so it may be replaced.
            stage.publish(replace=True, source=built)
        seconds = time.monotonic() - started
        LOG.info("image %s: cached as %s (%s) in %.2f s", image_id, path, fmt, seconds)
        return CachedImage(path, fmt, size, True, image_id, conversion, seconds)

    def _build_in(
        self,
        stage: staging.Stage,
        image_id: str,
        source: str,
        declared_format: str | None,
        max_size: int | None,
        progress: Callable[[float], None] | None,
    ) -> tuple[str, int, ConvertResult | None, str]:
        """Fetch, check and convert in ``stage``: (format, virtual size, conversion, file)."""
        part = stage.path
        converting = self.conf.force_raw_images and declared_format not in (None, "raw")
        fetch_share = 50.0 if converting else 100.0
        LOG.info("image %s: fetching %s into %s", image_id, source, part)
        self.fetchers.for_source(source).fetch(source, part, _scaled(progress, 0.0, fetch_share))
        # Safety first: nothing else (qemu-img included) reads it before.
        found = self.safety.check(part, declared_format, max_size)
        info = self.qemu_img.info(part, found.format)
        if info.backing_file:
            raise exception.ImageUnacceptable(
                path=source,
                reason="qemu-img reports a backing file. Use a self-contained image.",
            )
        if not self.conf.force_raw_images or found.format == "raw":
            return found.format, int(info.virtual_size), None, part
        LOG.info("image %s: converting %s to raw (force_raw_images)", image_id, found.format)
        converted = stage.scratch("raw")
        conversion = self.qemu_img.convert(
            part,
            converted,
            found.format,
            "raw",
            progress=_scaled(progress, fetch_share, 100.0),
            preallocation="none",  # bases are read-only: holes stay holes
        )
        os.unlink(part)  # its space back before the entry is published
        return "raw", int(info.virtual_size), conversion, converted

    def _remove_stale(self, path: str) -> list[str]:
        """Partial fetches of releases before the stages (called with the entry lock held)."""
        removed = []
        for stale in glob.glob(f"{glob.escape(path)}.*.part") + glob.glob(
            f"{glob.escape(path)}.*.tmp"
        ):
            if _LEGACY_PARTIAL.fullmatch(os.path.basename(stale)) and remove_if_exists(stale):
                LOG.info("removed %s, left by an interrupted fetch", stale)
                removed.append(stale)
        return removed

    def _remove_abandoned(self) -> list[str]:
        """The stages of fetches that were killed, of any entry: prune's share of clean-up.

        The entry's next fetch sweeps its own; an image that changed gets a
        new entry and never would.
        """
        removed = staging.sweep(self.base_dir)
        names = os.listdir(self.base_dir) if os.path.isdir(self.base_dir) else []
        entries = {m.group(1) for m in map(_LEGACY_PARTIAL.fullmatch, names) if m is not None}
        for name in sorted(entries):
            entry = os.path.join(self.base_dir, name)
            with self._lock(entry):
                removed += self._remove_stale(entry)
        return removed

    # -- list / prune --------------------------------------------------------------

    def list(self) -> list[CacheEntry]:
        entries = []
        for name in sorted(os.listdir(self.base_dir) if os.path.isdir(self.base_dir) else []):
            path = os.path.join(self.base_dir, name)
            if not ENTRY_NAME.match(name):
                continue
            meta = read_meta(path) or {}
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue
            entries.append(
                CacheEntry(
                    path=path,
                    image_id=meta.get("image_id", ""),
                    format=meta.get("format", "unknown"),
                    virtual_size=meta.get("virtual_size", stat.st_size),
                    disk_usage=stat.st_blocks * 512,
                    last_used=stat.st_mtime,
                )
            )
        return entries

    def prune(
        self, max_age: float | None = None, in_use: Collection[str] = ()
    ) -> builtins.list[str]:
        """Remove entries unused for ``max_age`` seconds; return their paths.

        ``max_age`` defaults to ``[image_cache]
        remove_unused_original_minimum_age_seconds``. An entry is in use, and
        kept, when its path is in ``in_use`` or when a qcow2 file directly in
        an instance directory (``$instances_path/*/``) names it as backing
        file. Each entry is removed under its lock, so a concurrent fetch
        either sees it whole or rebuilds it.
        """
        if max_age is None:
            max_age = self.conf.image_cache.remove_unused_original_minimum_age_seconds
        used = {os.path.realpath(p) for p in in_use} | self._referenced_bases()
        removed = self._remove_abandoned()
        for entry in self.list():
            if os.path.realpath(entry.path) in used:
                LOG.info("keeping %s: in use", entry.path)
                continue
            with self._lock(entry.path):
                try:
                    age = time.time() - os.stat(entry.path).st_mtime
                except FileNotFoundError:
                    continue
                if age < max_age:
                    continue
                if used_by_a_spawn(entry.path):
                    LOG.info("keeping %s: a spawn is making disks from it", entry.path)
                    continue
                # Scanned again under the lock: a spawn that released the
                # entry since the first scan has made its overlay by now.
                if os.path.realpath(entry.path) in self._referenced_bases():
                    LOG.info("keeping %s: in use", entry.path)
                    continue
                os.unlink(entry.path)
                remove_if_exists(meta_path(entry.path))
                remove_if_exists(use_lock_path(entry.path))
                fsync_dir(self.base_dir)
            LOG.info("removed %s (image %s), unused for %d s", entry.path, entry.image_id, age)
            removed.append(entry.path)
        return removed + self.remove_orphan_records()

    def remove_orphan_records(self) -> builtins.list[str]:
        """Remove the records (``<sha1>.info``, ``.use``) whose image is gone; return them.

        Nova's image cache manager removes unused bases from ``_base`` and
        knows nothing of these. Each is removed under its entry's lock, the
        lock a fetch holds from writing the record to publishing the image:
        an entry being built is skipped, never taken for an orphan.
        """
        names = sorted(os.listdir(self.base_dir)) if os.path.isdir(self.base_dir) else []
        removed = []
        for name in names:
            digest, _, suffix = name.partition(".")
            if suffix not in ("info", "use") or not ENTRY_NAME.match(digest):
                continue
            entry = os.path.join(self.base_dir, digest)
            try:
                with self._lock(entry, blocking=False):
                    if os.path.lexists(entry) or (suffix == "use" and used_by_a_spawn(entry)):
                        continue
                    if remove_if_exists(os.path.join(self.base_dir, name)):
                        removed.append(os.path.join(self.base_dir, name))
            except locks.Busy:
                LOG.debug("%s is being built: its record stays", entry)
        if removed:
            fsync_dir(self.base_dir)
            LOG.info("removed records of images no longer cached: %s", ", ".join(removed))
        return removed

    def _referenced_bases(self) -> set[str]:
        found = set()
        root = self.instances_path
        for candidate in glob.glob(os.path.join(glob.escape(root), "*", "*")):
            backing = qcow2_backing_file(candidate)
            if backing:
                directory = os.path.dirname(candidate)
                found.add(os.path.realpath(os.path.join(directory, backing)))
        return found


def _scaled(
    progress: Callable[[float], None] | None, low: float, high: float
) -> Callable[[float], None] | None:
    if progress is None:
        return None
    return lambda percent: progress(low + (high - low) * percent / 100.0)
