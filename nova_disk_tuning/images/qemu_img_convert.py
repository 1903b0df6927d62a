"""``qemu-img convert``, safely flushed and as fast as the storage allows.

The target cache is never qemu-img's default (unsafe: no flush); O_DIRECT
is used where the storage has it. A target made here is created at the
virtual size (preallocated as ``[DEFAULT] preallocate_images`` says) so
qemu-img can skip writing zeroes (``-n --target-is-zero``).
:class:`ConvertCommands` is the part of
:class:`~nova_disk_tuning.images.qemu_img.QemuImg` that converts.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import time
from typing import Any

from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common import staging
from nova_disk_tuning.common.units import GiB
from nova_disk_tuning.conf import preallocation as preallocation_mode
from nova_disk_tuning.images.inspection import OpenImage
from nova_disk_tuning.images.qemu_img_command import (
    QEMU_IMG,
    CpuLimit,
    ProgressCallback,
    names,
    remove_incomplete,
)
from nova_disk_tuning.images.qemu_img_create import CreateCommands
from nova_disk_tuning.storage import pagecache

LOG = logging.getLogger(__name__)

# convert_source_cache=auto reads a source through the page cache when at
# least this share of it is there (see _source_cache_for_state).
WARM_SOURCE = 0.5
# CPU seconds every conversion may use on top of [disk_tuning]
# convert_cpu_time_per_gib: walking the empty part of a virtual size took
# 0.01 s per TiB (qemu-img 7.2, 64 KiB clusters), under 1 s up to the
# default max_image_virtual_size_gb; the rest is qemu-img's start.
CPU_FLOOR_SECONDS = 60


@dataclasses.dataclass
class ConvertResult:
    command: list[str]  # the qemu-img argv that ran
    seconds: float  # the qemu-img convert process alone
    target_cache: str
    source_cache: str
    target_is_zero: bool  # -n --target-is-zero into a target made here
    preallocation: str  # none, space or performance: what the target got
    virtual_size: int
    prepare_seconds: float = 0.0  # creating / preallocating the target
    reasons: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConvertCommands(CreateCommands):
    """convert, and the choices it makes from the storage; part of QemuImg."""

    def convert(
        self,
        src: str | OpenImage,
        dst: str,
        src_format: str,
        dst_format: str,
        progress: ProgressCallback | None = None,
        preallocation: str | None = None,
    ) -> ConvertResult:
        """Convert ``src`` into ``dst``, safely flushed and as fast as the storage allows.

        An :class:`OpenImage` is read through its checked descriptor (the
        path may name another file by now); messages name its path.

        A ``dst`` that does not exist is made here (preallocated, then
        ``-n --target-is-zero``) and removed again if the conversion fails;
        callers that publish it convert into a stage
        (:mod:`~nova_disk_tuning.common.staging`).
        """
        image = src
        reader, src = names(image)
        if not src_format or not dst_format:
            raise exception.ImageError(path=src, reason="convert needs both formats (-f and -O)")
        if not os.path.exists(reader):
            raise exception.ImageNotFound(path=src)
        wanted = preallocation or preallocation_mode(self.conf)
        virtual_size = int(self.info(image, src_format).virtual_size)
        reasons: list[str] = []
        target_cache = self._target_cache(dst, reasons)
        source_cache = self._source_cache(reader, src, reasons)

        argv = [QEMU_IMG, "convert", "-t", target_cache, "-T", source_cache]
        argv += [*source_format_args(src_format), "-O", dst_format]
        # The [disk_tuning] convert_* defaults, measured with the benchmarks'
        # nova_disk_tuning_bench/conversion.py (2 GiB random-data qcow2 -> raw
        # on ext4, medians of 3, page cache dropped): all of them 4.8 s vs
        # Nova's -t none 11.8 s; -T writeback 8.2 s; no -W 5.7 s; no
        # --target-is-zero 5.1 s; -m 16 4.5 s (within the noise, so 8 stays).
        tuning = self.conf.disk_tuning
        argv += ["-m", str(tuning.convert_coroutines)]
        if dst_format == "raw" and tuning.convert_out_of_order:
            # Out-of-order writes would fragment a qcow2 target; raw has no layout.
            argv.append("-W")
        if progress is not None:
            argv.append("-p")

        created = not os.path.exists(dst)
        started = time.monotonic()
        done = "none"
        target_is_zero = False
        try:
            if created and tuning.convert_target_is_zero and self.supports_target_is_zero():
                done = self._make_target_for(src, dst, dst_format, virtual_size, wanted)
                argv += ["-n", "--target-is-zero"]
                target_is_zero = True
                reasons.append(f"target created here ({done}), so -n --target-is-zero")
            elif created and wanted != "none":
                reasons.append("target made by qemu-img itself: not preallocated")
            prepare = time.monotonic() - started
            argv += [source_name(reader, src_format), dst]
            LOG.info("converting %s -> %s: %s", src, dst, " ".join(argv))
            seconds = self._run_streaming(
                argv,
                src,
                dst,
                virtual_size,
                progress,
                reader=reader,
                cpu_limit=self.cpu_limit(reader),
            )
        except BaseException:
            if created:
                remove_incomplete(dst)
            raise
        return ConvertResult(
            command=argv,
            seconds=seconds,
            target_cache=target_cache,
            source_cache=source_cache,
            target_is_zero=target_is_zero,
            preallocation=done,
            virtual_size=virtual_size,
            prepare_seconds=prepare,
            reasons=reasons,
        )

    def cpu_limit(self, reader: str) -> CpuLimit | None:
        """What a conversion of ``reader`` may use: proportional to what it allocates."""
        per_gib: int = self.conf.disk_tuning.convert_cpu_time_per_gib
        if not per_gib:
            return None
        allocated = self.probe.allocation(reader).allocated
        return CpuLimit(CPU_FLOOR_SECONDS + math.ceil(per_gib * allocated / GiB), allocated)

    def _target_cache(self, dst: str, reasons: list[str]) -> str:
        # Never qemu-img's default (unsafe: no flush). none and writeback both
        # fdatasync once at the end; writethrough syncs every write (10.6 s vs
        # 1.8 s for none on 3 GiB here).
        # A block device (an LV) is probed itself: its directory is /dev, a
        # tmpfs that says nothing about the device.
        if os.path.exists(dst) and self.probe.is_block_device(dst):
            where = dst
        else:
            where = os.path.dirname(os.path.abspath(dst))
        if self.probe.supports_direct_io(where):
            reasons.append(f"-t none: O_DIRECT works at {where}")
            return "none"
        reasons.append(f"-t writeback: no O_DIRECT at {where}")
        LOG.info("no O_DIRECT at %s: converting with target cache writeback", where)
        return "writeback"

    def _source_cache(self, reader: str, src: str, reasons: list[str]) -> str:
        wanted: str = self.conf.disk_tuning.convert_source_cache
        why = "[disk_tuning] convert_source_cache"
        if wanted == "auto":
            wanted, why = _source_cache_for_state(reader)
        if wanted in ("none", "directsync") and not self.probe.supports_direct_io(reader):
            reasons.append(f"-T writeback: no O_DIRECT for {src}")
            LOG.info("no O_DIRECT for %s: reading with source cache writeback", src)
            return "writeback"
        reasons.append(f"-T {wanted}: {why}")
        return wanted

    def _make_target_for(self, src: str, dst: str, fmt: str, size: int, wanted: str) -> str:
        """_make_target, with a file too large for the file system said of ``src``."""
        try:
            return self._make_target(dst, fmt, size, wanted)
        except OSError as exc:
            if exc.errno != errno.EFBIG:
                raise
            directory = os.path.dirname(os.path.abspath(dst))
            if staging.is_stage(os.path.basename(directory)):
                directory = os.path.dirname(directory)  # where the image is going
            raise exception.ImageUnacceptable(
                path=src,
                reason=f"its virtual size ({size} bytes) is larger than the largest file "
                f"{self.probe.fs_type(directory)} at {directory} can hold (EFBIG). Use an "
                "image of a size its guest really needs",
            ) from None

    def _make_target(self, dst: str, fmt: str, size: int, wanted: str) -> str:
        """Create a zeroed target of ``size``; return the preallocation done."""
        if fmt != "raw":
            # performance -> standalone qcow2 with preallocation=falloc.
            return self.create(dst, fmt, size, preallocation=wanted).preallocation
        with open(dst, "xb") as handle:
            os.ftruncate(handle.fileno(), size)
        if wanted == "none":
            return "none"
        return "space" if self._fallocate(dst, size) else "none"


def _source_cache_for_state(src: str) -> tuple[str, str]:
    """``-T`` for the source's page-cache state now, and why.

    Measured with nova_disk_tuning_bench/conversion.py (2 GiB random-data
    qcow2 -> raw, ext4 on virtio, medians of 3, interleaved, 2026-11-26): a
    warm source took
    2.08 s with -T writeback and 4.09 s with -T none; a cold one 4.62 s with
    -T none and 6.33 s with -T writeback. Nova's real path converts the image
    it just downloaded: warm.
    """
    fraction = pagecache.cached_fraction(src)
    if fraction is None:
        return "none", "page-cache state of the source unknown: O_DIRECT"
    if fraction >= WARM_SOURCE:
        return "writeback", f"{fraction:.0%} of the source is in the page cache: read it there"
    return "none", f"{fraction:.0%} of the source is in the page cache: O_DIRECT"


def source_format_args(fmt: str) -> list[str]:
    """``-f FMT``; a qcow2 source names its driver in :func:`source_name` instead."""
    return [] if fmt == "qcow2" else ["-f", fmt]


def source_name(path: str, fmt: str) -> str:
    """What qemu-img is told to read: for qcow2, with its backing file switched off.

    The image passed the safety checks (no backing file, no data file), but
    qemu-img opens the path again: if the file was swapped or rewritten in
    between, a backing file named in the new header would make qemu-img read
    any host file into the output. ``"backing": null`` makes qemu-img ignore
    the header's backing file whatever it says (checked with qemu-img 7.2: a
    qcow2 backed by a host file converts to zeroes, not the file's bytes).
    """
    if fmt != "qcow2":
        return path
    node = {"driver": "qcow2", "backing": None, "file": {"driver": "file", "filename": path}}
    return "json:" + json.dumps(node, sort_keys=True)
