"""The upkeep of the base-image cache: list, prune, orphan records, holders, leftovers.

The part of :class:`~nova_disk_tuning.images.cache.ImageCache` that looks
after what the fetches left: entries nobody uses any more, records whose
image Nova's own cache manager removed, stages of killed fetches, and what
holds an entry (the overlays that name it, a spawn making disks from it).
"""

from __future__ import annotations

import builtins
import dataclasses
import glob
import os
import re
import time
from collections.abc import Collection
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning.common import locks, staging
from nova_disk_tuning.common.files import fsync_dir, remove_if_exists
from nova_disk_tuning.images.cache_entry import (
    ENTRY_NAME,
    meta_path,
    qcow2_backing_file,
    read_meta,
    use_lock_path,
    used_by_a_spawn,
)

LOG = logging.getLogger(__name__)

# <sha1>.<pid>.part / .tmp: where releases before the stages fetched; removed
# under the entry's lock, which every fetch of that entry held.
_LEGACY_PARTIAL = re.compile(r"([0-9a-f]{40})(?:\.info)?\.[0-9]+\.(?:part|tmp)")


@dataclasses.dataclass
class CacheEntry:
    path: str
    image_id: str
    format: str
    virtual_size: int
    disk_usage: int  # bytes allocated on the host
    last_used: float  # mtime, touched on every use


class CacheUpkeep:
    """What ImageCache does besides fetching (a mixin: it uses the cache's paths and lock)."""

    conf: cfg.ConfigOpts

    @property
    def instances_path(self) -> str:
        raise NotImplementedError

    @property
    def base_dir(self) -> str:
        raise NotImplementedError

    def _lock(self, path: str, blocking: bool = True) -> Any:
        raise NotImplementedError

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

    def holders(self, st: os.stat_result) -> str | None:
        """What holds the file ``st`` describes if it is a cached base (None: not held).

        A base is held by every overlay that names it as its backing file,
        whether or not its guest runs (a running one also holds QEMU's lock,
        :mod:`nova_disk_tuning.storage.holders`), and by a spawn making disks
        from it. Writing to it would change every such disk.
        """
        for entry in self.list():
            try:
                found = os.stat(entry.path)
            except FileNotFoundError:
                continue
            if (found.st_dev, found.st_ino) != (st.st_dev, st.st_ino):
                continue
            real = os.path.realpath(entry.path)
            overlays = sorted(disk for disk, base in self._overlays().items() if base == real)
            if overlays:
                shown = ", ".join(overlays[:3]) + (" and more" if len(overlays) > 3 else "")
                return f"it is the cached base of image {entry.image_id!r}, behind {shown}"
            if used_by_a_spawn(entry.path):
                return f"it is the cached base of image {entry.image_id!r}, in use by a spawn"
        return None

    def _referenced_bases(self) -> set[str]:
        return set(self._overlays().values())

    def _overlays(self) -> dict[str, str]:
        """Each qcow2 directly in an instance directory -> the real path of its backing file."""
        found = {}
        root = self.instances_path
        for candidate in glob.glob(os.path.join(glob.escape(root), "*", "*")):
            backing = qcow2_backing_file(candidate)
            if backing:
                directory = os.path.dirname(candidate)
                found[candidate] = os.path.realpath(os.path.join(directory, backing))
        return found
