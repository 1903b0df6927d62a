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
:mod:`~nova_disk_tuning.images.cache_entry`; listing, pruning and what
holds an entry in :mod:`~nova_disk_tuning.images.cache_upkeep`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import stat
import time
from collections.abc import Callable, Mapping
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common import locks, staging
from nova_disk_tuning.common.files import narrow_mode
from nova_disk_tuning.conf import lock_wait_timeout
from nova_disk_tuning.images import diskops, fetch, inspection
from nova_disk_tuning.images.cache_entry import (
    identity,
    mark_in_use,
    read_meta,
    write_meta,
)
from nova_disk_tuning.images.cache_upkeep import CacheUpkeep
from nova_disk_tuning.images.qemu_img import ConvertResult, QemuImg

LOG = logging.getLogger(__name__)


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


class ImageCache(CacheUpkeep):
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
        self.safety = image_safety or inspection.ImageSafety.from_conf(conf)

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
        # surrogateescape: an id from the command line is any bytes (os.fsencode's rule).
        key = image_id.encode("utf-8", "surrogateescape")
        return os.path.join(self.base_dir, hashlib.sha1(key).hexdigest())

    def _lock(self, path: str, blocking: bool = True) -> Any:
        return locks.external_lock(
            f"image-{os.path.basename(path)}",
            self.lock_dir,
            blocking,
            what=f"the cache entry {path} (another fetch or prune of it runs)",
            timeout=lock_wait_timeout(self.conf),
        )

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
        if meta.get("identity") != identity(path):
            # Truncated, rewritten (a qcow2 given a backing file), replaced,
            # or cached by a release that recorded no identity: what is there
            # is not what was checked, so it is checked and built again.
            LOG.warning(
                "cached %s is not the file that was checked and cached (inode, size or "
                "change time differ): rebuilding it",
                path,
            )
            return None
        if max_size is not None and meta["virtual_size"] > max_size:
            raise exception.ImageUnacceptable(
                path=path,
                reason=f"its virtual size {meta['virtual_size']} bytes is larger than "
                f"the allowed {max_size} bytes (the flavor's disk). Use a larger flavor.",
            )
        os.utime(path)  # last used, for prune; this changes its ctime, so re-recorded
        write_meta(path, {**meta, "identity": identity(path)})
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
            # Under the entry lock: what is at the final name has no record
            # of its format (checked by _reuse), so it may be replaced. The
            # record follows the image: a kill in between leaves an image
            # without one, which the next fetch rebuilds.
            stage.publish(replace=True, source=built)
            record = {"image_id": image_id, "format": fmt, "virtual_size": size}
            write_meta(path, {**record, "identity": identity(path)})
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
        # The conversion is readable by no more than the fetched image was.
        narrow_mode(converted, stat.S_IMODE(os.stat(part).st_mode))
        os.unlink(part)  # its space back before the entry is published
        return "raw", int(info.virtual_size), conversion, converted


def _scaled(
    progress: Callable[[float], None] | None, low: float, high: float
) -> Callable[[float], None] | None:
    if progress is None:
        return None
    return lambda percent: progress(low + (high - low) * percent / 100.0)
