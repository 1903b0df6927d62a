"""qemu-img, run safely and fast: info, create, resize, convert.

One :class:`QemuImg` object remembers what it learnt about the installed
qemu-img (version, extended L2 support) and about the storage (through its
:class:`~nova_disk_tuning.storage.probe.StorageProbe`), so each is asked once.
Every command line is logged before it runs.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from oslo_concurrency import processutils
from oslo_config import cfg
from oslo_utils import imageutils

from nova_disk_tuning import exception

LOG = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"
ProgressCallback = Callable[[float], None]
Execute = Callable[..., tuple[str, str]]

# Signals that mean a process under prlimit hit its limits: SIGXCPU at the
# CPU-time limit, SIGKILL past it, SIGABRT when GLib fails to allocate under
# the address-space limit.
_LIMIT_SIGNALS = {-signal.SIGXCPU, -signal.SIGKILL, -signal.SIGABRT}
_ALLOC_FAILURE = re.compile(
    r"cannot allocate memory|failed to allocate|could not allocate|out of memory", re.I
)
_ENOSPC = re.compile(r"no space left on device", re.I)
# qemu-img -p prints "    (12.34/100%)" followed by \r, many times per line.
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
# --target-is-zero exists since qemu-img 5.0 and is honoured since 5.1.
_TARGET_IS_ZERO_SINCE = (5, 1, 0)
PREALLOCATE_MODES = ("none", "space", "performance")
# The overlay options of preallocate_images=performance. The design's
# measurement (qemu-img bench, 4 KiB direct writes into a fresh overlay of an
# 8 GiB base): 12.1 s plain, 12.8 s with fallocate -n, 2.1 s with these.
PERFORMANCE_OVERLAY_OPTIONS = "extended_l2=on,cluster_size=128k,preallocation=falloc"


@dataclasses.dataclass
class CreateResult:
    command: list[str]
    preallocation: str  # what was actually done: none, space or performance
    requested: str  # what the caller asked for
    reason: str  # why they differ, or how it was done


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


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when ``parent`` dies."""

    def preexec() -> None:
        # A killed caller must not leave qemu-img writing on: PR_SET_PDEATHSIG
        # (prctl option 1) sends SIGKILL to the child when its parent dies.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            # The parent died between fork and prctl: nobody would kill us.
            os._exit(1)

    return preexec


def _split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (ended by \\r or \\n) and the unfinished tail."""
    parts = re.split(rb"[\r\n]", buffer)
    return parts[:-1], parts[-1]


def parse_progress(output: bytes) -> list[float]:
    """The percentages in qemu-img ``-p`` output."""
    return [float(m.group(1)) for m in _PROGRESS.finditer(output)]


class QemuImg:
    """The installed qemu-img, with the policy of how to call it."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        probe: Any = None,
        execute: Execute | None = None,
        popen: Callable[..., subprocess.Popen] | None = None,
    ) -> None:
        self.conf = conf
        self._probe = probe
        # Injectable so unit tests can check command lines without qemu-img.
        self._execute = execute or processutils.execute
        self._popen = popen or subprocess.Popen
        self._version: tuple[int, int, int] | None = None
        self._extended_l2: bool | None = None

    # -- facts about the installed qemu-img and the storage ---------------------

    @property
    def probe(self) -> Any:
        if self._probe is None:
            from nova_disk_tuning.storage.probe import StorageProbe

            self._probe = StorageProbe()
        return self._probe

    def version(self) -> tuple[int, int, int]:
        """The installed qemu-img's version, e.g. ``(7, 2, 22)``."""
        if self._version is None:
            out, _ = self._run("version", "", [QEMU_IMG, "--version"])
            match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
            if not match:
                raise exception.QemuImgError(
                    command="--version",
                    path=QEMU_IMG,
                    reason=f"unexpected output {out[:80]!r}; is qemu-img installed?",
                )
            self._version = (int(match[1]), int(match[2]), int(match[3] or 0))
        return self._version

    def supports_extended_l2(self) -> bool:
        """Whether qcow2 has ``extended_l2`` here (asked once, from qemu-img itself)."""
        if self._extended_l2 is None:
            with tempfile.TemporaryDirectory() as tmp:
                argv = [QEMU_IMG, "create", "-f", "qcow2", "-o", "help", os.path.join(tmp, "x")]
                try:
                    out, _ = self._run("create", tmp, argv)
                except exception.QemuImgError:
                    out = ""
            self._extended_l2 = "extended_l2" in out
            LOG.info("qemu-img %s extended_l2 for qcow2", "has" if self._extended_l2 else "lacks")
        return self._extended_l2

    def supports_target_is_zero(self) -> bool:
        return self.version() >= _TARGET_IS_ZERO_SINCE

    # -- info ------------------------------------------------------------------

    def limits(self) -> processutils.ProcessLimits:
        """prlimit for qemu-img on untrusted images, from config read now."""
        return processutils.ProcessLimits(
            cpu_time=self.conf.libvirt.images_cpu_time_limit,
            address_space=self.conf.libvirt.images_address_space_limit * 1024 * 1024,
        )

    def info(self, path: str, format: str | None = None) -> imageutils.QemuImgInfo:
        """``qemu-img info`` under resource limits, never letting it probe a known format."""
        if not os.path.exists(path):
            raise exception.ImageNotFound(path=path)
        argv = [QEMU_IMG, "info", "--force-share", "--output=json"]
        if format:
            argv += ["-f", format]
        argv.append(path)
        out, _ = self._run("info", path, argv, prlimit=self.limits())
        try:
            data = json.loads(out)
            if not isinstance(data, dict) or "virtual-size" not in data:
                raise ValueError("no virtual-size")
            return imageutils.QemuImgInfo(out, format="json")
        except (ValueError, TypeError) as exc:
            raise exception.QemuImgError(
                command="info",
                path=path,
                reason=f"unparseable output ({exc}): {out[:120]!r}. "
                "Check that qemu-img is a working QEMU build.",
            ) from None

    # -- create / resize ---------------------------------------------------------

    def create(
        self,
        path: str,
        fmt: str,
        size: int | None,
        backing: str | None = None,
        backing_format: str | None = None,
        preallocation: str | None = None,
    ) -> CreateResult:
        """Create an image; ``preallocation`` defaults to ``[DEFAULT] preallocate_images``.

        qcow2 overlays always name their backing format (a missing one lets
        qemu probe the base, which a guest can turn into a host file read).
        """
        requested = preallocation or self.conf.preallocate_images
        if requested not in PREALLOCATE_MODES:
            raise exception.ImageError(
                path=path,
                reason=f"unknown preallocation {requested!r}; use none, space or performance",
            )
        if backing and not backing_format:
            raise exception.ImageError(
                path=path, reason="a backing file needs its format (backing_format)"
            )
        if backing and fmt != "qcow2":
            raise exception.ImageError(path=path, reason=f"{fmt} images cannot have a backing file")
        if size is None and not backing:
            raise exception.ImageError(path=path, reason="a size is needed without a backing file")

        done, reason, options = self._creation_policy(fmt, requested, backing)
        argv = [QEMU_IMG, "create", "-f", fmt]
        if backing:
            # -b/-F instead of -o backing_file=...: no comma escaping of paths.
            argv += ["-b", backing, "-F", backing_format]
        if options:
            argv += ["-o", options]
        argv.append(path)
        if size is not None:
            argv.append(str(size))
        created = not os.path.exists(path)
        try:
            self._run("create", path, argv, wanted=size or 0)
            if done == "space" and not self._preallocate(path, fmt, size, backing, backing_format):
                done = "none"
                reason = f"{reason}; the file system cannot fallocate, so it stays sparse"
        except BaseException:
            if created:
                _remove(path)
            raise
        LOG.info("created %s (%s, preallocation %s: %s)", path, fmt, done, reason)
        return CreateResult(command=argv, preallocation=done, requested=requested, reason=reason)

    def _creation_policy(
        self, fmt: str, requested: str, backing: str | None
    ) -> tuple[str, str, str]:
        """(what is done, why, -o options) for a create request."""
        if requested == "none":
            return "none", "sparse, as configured", ""
        if requested == "performance" and fmt == "qcow2":
            if not backing:
                return (
                    "performance",
                    "standalone qcow2 with preallocation=falloc",
                    ("preallocation=falloc"),
                )
            if self.supports_extended_l2():
                return (
                    "performance",
                    "overlay with extended L2 and falloc",
                    (PERFORMANCE_OVERLAY_OPTIONS),
                )
            reason = (
                "qemu-img lacks extended_l2 (needs QEMU >= 5.2), so overlays cannot be "
                "preallocated; fell back to space (fallocate with KEEP_SIZE)"
            )
            LOG.warning("preallocate_images=performance: %s", reason)
            return "space", reason, ""
        return "space", "fallocate the whole disk up front", ""

    def _preallocate(
        self, path: str, fmt: str, size: int | None, backing: str | None, backing_fmt: str | None
    ) -> bool:
        """fallocate the image; True when the space really got allocated."""
        from nova_disk_tuning.storage.preallocate import preallocate

        if size is None:
            size = int(self.info(backing or path, backing_fmt or fmt).virtual_size)
        # qcow2 keeps its apparent size (KEEP_SIZE): its length is metadata.
        result = preallocate(path, size, keep_size=fmt != "raw", probe=self.probe)
        LOG.info("preallocated %s: %s (%s)", path, result.method, result.reason)
        return result.allocated

    def resize(self, path: str, size: int, format: str) -> list[str]:
        """Grow an image; ``-f`` always, so qemu-img never probes the format."""
        if not format:
            raise exception.ImageError(path=path, reason="resize needs the image format")
        argv = [QEMU_IMG, "resize", "-f", format, path, str(size)]
        self._run("resize", path, argv)
        return argv

    # -- convert -----------------------------------------------------------------

    def convert(
        self,
        src: str,
        dst: str,
        src_format: str,
        dst_format: str,
        progress: ProgressCallback | None = None,
        preallocation: str | None = None,
        fresh_target: bool = False,
    ) -> ConvertResult:
        """Convert ``src`` into ``dst``, safely flushed and as fast as the storage allows.

        ``fresh_target``: ``dst`` is an empty file the caller has just made
        and removes on failure (a locked temporary name, see
        :mod:`~nova_disk_tuning.images.publish`). It is prepared like a
        target made here (preallocated, ``-n --target-is-zero``) but never
        removed here.
        """
        if not src_format or not dst_format:
            raise exception.ImageError(path=src, reason="convert needs both formats (-f and -O)")
        if not os.path.exists(src):
            raise exception.ImageNotFound(path=src)
        wanted = preallocation or self.conf.preallocate_images
        virtual_size = int(self.info(src, src_format).virtual_size)
        reasons: list[str] = []
        target_cache = self._target_cache(dst, reasons)
        source_cache = self._source_cache(src, reasons)

        argv = [QEMU_IMG, "convert", "-t", target_cache, "-T", source_cache, "-f", src_format]
        argv += ["-O", dst_format]
        # The [disk_tuning] convert_* defaults, measured with
        # bench/conversion.py (2 GiB random-data qcow2 -> raw on ext4, medians of
        # 3, page cache dropped): all of them 4.8 s vs Nova's -t none 11.8 s;
        # -T writeback 8.2 s; no -W 5.7 s; no --target-is-zero 5.1 s; -m 16
        # 4.5 s (within the noise, so 8 stays).
        tuning = self.conf.disk_tuning
        argv += ["-m", str(tuning.convert_coroutines)]
        if dst_format == "raw" and tuning.convert_out_of_order:
            # Out-of-order writes would fragment a qcow2 target; raw has no layout.
            argv.append("-W")
        if progress is not None:
            argv.append("-p")

        created = not os.path.exists(dst)
        fresh = created or fresh_target
        started = time.monotonic()
        done = "none"
        target_is_zero = False
        try:
            if fresh and tuning.convert_target_is_zero and self.supports_target_is_zero():
                done = self._make_target_for(
                    src, dst, dst_format, virtual_size, wanted, fresh_target
                )
                argv += ["-n", "--target-is-zero"]
                target_is_zero = True
                reasons.append(f"target created here ({done}), so -n --target-is-zero")
            elif fresh and wanted != "none":
                reasons.append("target made by qemu-img itself: not preallocated")
            prepare = time.monotonic() - started
            argv += [src, dst]
            LOG.info("converting %s -> %s: %s", src, dst, " ".join(argv))
            seconds = self._run_streaming(argv, src, dst, virtual_size, progress)
        except BaseException:
            if created:
                _remove(dst)
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

    def _source_cache(self, src: str, reasons: list[str]) -> str:
        wanted = self.conf.disk_tuning.convert_source_cache
        if wanted in ("none", "directsync") and not self.probe.supports_direct_io(src):
            reasons.append(f"-T writeback: no O_DIRECT for {src}")
            LOG.info("no O_DIRECT for %s: reading with source cache writeback", src)
            return "writeback"
        reasons.append(f"-T {wanted}: [disk_tuning] convert_source_cache")
        return wanted

    def _make_target_for(
        self, src: str, dst: str, fmt: str, size: int, wanted: str, exists: bool
    ) -> str:
        """_make_target, with a file too large for the file system said of ``src``."""
        try:
            return self._make_target(dst, fmt, size, wanted, exists)
        except OSError as exc:
            if exc.errno != errno.EFBIG:
                raise
            directory = os.path.dirname(os.path.abspath(dst))
            raise exception.ImageUnacceptable(
                path=src,
                reason=f"its virtual size ({size} bytes) is larger than the largest file "
                f"{self.probe.fs_type(directory)} at {directory} can hold (EFBIG). Use a "
                "smaller image, or a file system with larger files (xfs)",
            ) from None

    def _make_target(self, dst: str, fmt: str, size: int, wanted: str, exists: bool = False) -> str:
        """Create a zeroed target of ``size``; return the preallocation done.

        ``exists``: ``dst`` is the caller's empty file; it is reused as it is
        (same inode: the caller's lock on it stays valid), never re-created.
        """
        if fmt != "raw":
            # performance -> standalone qcow2 with preallocation=falloc.
            return self.create(dst, fmt, size, preallocation=wanted).preallocation
        with open(dst, "r+b" if exists else "xb") as handle:
            os.ftruncate(handle.fileno(), size)
        if wanted == "none":
            return "none"
        from nova_disk_tuning.storage.preallocate import preallocate

        result = preallocate(dst, size, probe=self.probe)
        LOG.info("preallocated %s: %s (%s)", dst, result.method, result.reason)
        return "space" if result.allocated else "none"

    # -- running qemu-img ----------------------------------------------------------

    def _run(
        self,
        command: str,
        path: str,
        argv: Sequence[str],
        prlimit: processutils.ProcessLimits | None = None,
        wanted: int = 0,
    ) -> tuple[str, str]:
        """Run qemu-img; ``wanted``: the bytes it may allocate (for ENOSPC messages)."""
        LOG.debug("running %s", " ".join(argv))
        # processutils hands env_variables to Popen as the *whole* environment:
        # keep PATH and the rest, and only pin the locale we parse messages in.
        kwargs: dict[str, Any] = {"env_variables": {**os.environ, "LC_ALL": "C", "LANG": "C"}}
        if prlimit is not None:
            kwargs["prlimit"] = prlimit
        try:
            return self._execute(*argv, **kwargs)
        except FileNotFoundError:
            raise exception.QemuImgError(
                command=command, path=path, reason="qemu-img is not installed (package qemu-utils)"
            ) from None
        except processutils.ProcessExecutionError as exc:
            raise self._error(
                command, path, exc.exit_code, exc.stderr or "", prlimit, wanted
            ) from None

    def _error(
        self,
        command: str,
        path: str,
        exit_code: object,
        stderr: str,
        prlimit: processutils.ProcessLimits | None,
        wanted: int = 0,
    ) -> exception.ImageError:
        if prlimit is not None and (exit_code in _LIMIT_SIGNALS or _ALLOC_FAILURE.search(stderr)):
            limits = (
                f"{prlimit.cpu_time} CPU seconds, {prlimit.address_space} bytes of address space"
            )
            return exception.ImageLimitExceeded(command=command, path=path, limits=limits)
        if _ENOSPC.search(stderr):
            return _insufficient(path, wanted)
        if "No such file or directory" in stderr:
            return exception.ImageNotFound(path=path)
        reason = (stderr.strip() or f"exit code {exit_code}").splitlines()[-1]
        return exception.QemuImgError(command=command, path=path, reason=reason)

    def _run_streaming(
        self,
        argv: Sequence[str],
        src: str,
        dst: str,
        size: int,
        progress: ProgressCallback | None,
    ) -> float:
        """Run qemu-img convert, feeding ``-p`` output to ``progress`` as it comes.

        processutils.execute only returns output at exit, so this uses Popen.
        No prlimit here: the image already passed the safety checks and a
        limited ``qemu-img info``, and a large conversion legitimately needs
        more CPU time than ``images_cpu_time_limit``.
        """
        started = time.monotonic()
        try:
            # stderr joins stdout: one pipe cannot fill up while we wait on the other.
            child = self._popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
                # preexec_fn is acceptable: when the CLI starts qemu-img its only other
                # thread, if any, is rich's progress refresher, which holds no lock the child
                # needs; PR_SET_PDEATHSIG fires when the parent *thread* exits, and this one
                # waits for the child below, so only the death of the process fires it.
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except FileNotFoundError:
            raise exception.QemuImgError(
                command="convert", path=src, reason="qemu-img is not installed (package qemu-utils)"
            ) from None
        assert child.stdout is not None
        tail = b""
        messages: list[str] = []
        try:
            while chunk := child.stdout.read1(65536):
                lines, tail = _split_lines(tail + chunk)
                for line in lines:
                    values = [float(m.group(1)) for m in _PROGRESS.finditer(line)]
                    if not values and line.strip():
                        messages.append(line.decode(errors="replace").strip())
                    if progress is not None:
                        for value in values:
                            progress(value)
            code = child.wait()
        except BaseException:
            # Ctrl-C, SIGTERM (cmd.main.Terminated) or a failing progress
            # callback: stop qemu-img and reap it before the caller's clean-up
            # removes the target, so nothing writes on while it runs.
            child.kill()
            child.wait()
            raise
        finally:
            child.stdout.close()
        if tail.strip() and not _PROGRESS.search(tail):
            messages.append(tail.decode(errors="replace").strip())
        seconds = time.monotonic() - started
        if code != 0:
            output = "\n".join(messages)
            if _ENOSPC.search(output):
                raise _insufficient(dst, size)
            raise self._error("convert", src, code, output, None)
        if progress is not None:
            progress(100.0)
        LOG.info("converted %s -> %s in %.2f s", src, dst, seconds)
        return seconds


def _insufficient(path: str, wanted: int = 0) -> exception.InsufficientStorage:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        stat = os.statvfs(directory)
        free = stat.f_bavail * stat.f_frsize
    except OSError:
        free = 0
    return exception.InsufficientStorage(path=path, wanted=wanted, free=free)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
        LOG.info("removed the incomplete %s", path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            LOG.warning("could not remove the incomplete %s: %s", path, exc)
