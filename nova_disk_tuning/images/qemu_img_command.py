"""Running qemu-img: its environment, its progress output, and its errors as ours.

:class:`QemuImgCommand` is the part of :class:`~nova_disk_tuning.images.qemu_img.QemuImg`
that starts processes: ``processutils.execute`` (under prlimit for untrusted
images) for short commands, ``Popen`` for a conversion whose ``-p`` progress
is read while it runs. Both are injectable, so unit tests check command lines
without qemu-img. Every failure becomes one of the exceptions in
:mod:`~nova_disk_tuning.exception`, with what to do about it.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from oslo_concurrency import processutils
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common.files import remove_if_exists
from nova_disk_tuning.common.libc import libc
from nova_disk_tuning.images.inspection import OpenImage

LOG = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"
ProgressCallback = Callable[[float], None]
Execute = Callable[..., tuple[str, str]]
Popen = Callable[..., subprocess.Popen]

NOT_INSTALLED = "qemu-img is not installed (package qemu-utils)"
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
# PR_SET_PDEATHSIG, the prctl(2) option that signals a child when its parent dies.
_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass(frozen=True)
class CpuLimit:
    """The CPU seconds a conversion may use, and the allocation they were given for."""

    seconds: int
    allocated: int


def parse_progress(output: bytes) -> list[float]:
    """The percentages in qemu-img ``-p`` output."""
    return [float(m.group(1)) for m in _PROGRESS.finditer(output)]


def _split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (ended by \\r or \\n) and the unfinished tail."""
    parts = re.split(rb"[\r\n]", buffer)
    return parts[:-1], parts[-1]


def _environment() -> dict[str, str]:
    # The caller's environment (PATH above all), with the locale whose
    # messages the errors are parsed in.
    return {**os.environ, "LC_ALL": "C", "LANG": "C"}


def _die_with_parent(parent: int, cpu_seconds: int | None = None) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when ``parent`` dies; at most ``cpu_seconds``."""
    # Looked up here, in the parent: loading the C library between fork and
    # exec could take locks another thread of the parent held.
    prctl = libc().prctl

    def preexec() -> None:
        # A killed caller must not leave qemu-img writing on.
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            # The parent died between fork and prctl: nobody would kill us.
            os._exit(1)
        if cpu_seconds is not None:
            # SIGXCPU at the soft limit (qemu-img does not catch it), SIGKILL
            # at the hard one should it ever be caught.
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 10))

    return preexec


def _insufficient(path: str, wanted: int = 0) -> exception.InsufficientStorage:
    """ENOSPC writing ``path``, with the free space of its directory now."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        stat = os.statvfs(directory)
        free = stat.f_bavail * stat.f_frsize
    except OSError:
        free = 0
    return exception.InsufficientStorage(path=path, wanted=wanted, free=free)


def remove_incomplete(path: str) -> None:
    """Remove an image a failed command left half made; a failure here is only logged."""
    try:
        if remove_if_exists(path):
            LOG.info("removed the incomplete %s", path)
    except OSError as exc:
        LOG.warning("could not remove the incomplete %s: %s", path, exc)


def names(image: str | OpenImage) -> tuple[str, str]:
    """(what qemu-img is told to open, what messages call it) for a path or a checked image."""
    if isinstance(image, OpenImage):
        return image.reader, image.path
    return image, image


class QemuImgCommand:
    """Starts qemu-img and turns its failures into our exceptions."""

    def __init__(self, execute: Execute | None = None, popen: Popen | None = None) -> None:
        # Injectable so unit tests can check command lines without qemu-img.
        self._execute = execute or processutils.execute
        self._popen = popen or subprocess.Popen

    def _run(
        self,
        command: str,
        path: str,
        argv: Sequence[str],
        prlimit: processutils.ProcessLimits | None = None,
        wanted: int = 0,
        reader: str | None = None,
    ) -> tuple[str, str]:
        """Run qemu-img; ``wanted``: the bytes it may allocate (for ENOSPC messages).

        ``reader``: the name qemu-img opens for ``path`` (a checked
        descriptor); its messages name ``path`` instead.
        """
        LOG.debug("running %s", " ".join(argv))
        # processutils hands env_variables to Popen as the *whole* environment.
        kwargs: dict[str, Any] = {"env_variables": _environment()}
        if prlimit is not None:
            kwargs["prlimit"] = prlimit
        try:
            return self._execute(*argv, **kwargs)
        except FileNotFoundError:
            raise exception.QemuImgError(command=command, path=path, reason=NOT_INSTALLED) from None
        except processutils.ProcessExecutionError as exc:
            stderr = exc.stderr or ""
            if reader:
                stderr = stderr.replace(reader, path)
            raise self._error(command, path, exc.exit_code, stderr, prlimit, wanted) from None

    def _error(
        self,
        command: str,
        path: str,
        exit_code: object,
        stderr: str,
        prlimit: processutils.ProcessLimits | None,
        wanted: int = 0,
    ) -> exception.ImageError | exception.InsufficientStorage:
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
        reader: str | None = None,
        cpu_limit: CpuLimit | None = None,
    ) -> float:
        """Run qemu-img convert, feeding ``-p`` output to ``progress`` as it comes.

        processutils.execute only returns output at exit, so this uses Popen.
        ``cpu_limit`` bounds its CPU time (RLIMIT_CPU); not
        ``images_cpu_time_limit``, which is for ``qemu-img info``: a large
        conversion legitimately needs more.
        """
        started = time.monotonic()
        try:
            # stderr joins stdout: one pipe cannot fill up while we wait on the other.
            child = self._popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=_environment(),
                # preexec_fn is acceptable: when the CLI starts qemu-img its only other
                # thread, if any, is rich's progress refresher, which holds no lock the child
                # needs; PR_SET_PDEATHSIG fires when the parent *thread* exits, and this one
                # waits for the child below, so only the death of the process fires it.
                preexec_fn=_die_with_parent(os.getpid(), cpu_limit.seconds if cpu_limit else None),
            )
        except FileNotFoundError:
            raise exception.QemuImgError(
                command="convert", path=src, reason=NOT_INSTALLED
            ) from None
        # Bytes (no text mode), so a BufferedReader, whose read1 returns what
        # is there. Under eventlet (nova-compute monkey-patches subprocess)
        # the pipe is a GreenFileIO: no read1, and its read returns what is there.
        stdout = cast(io.BufferedReader, child.stdout)
        read_some = getattr(stdout, "read1", stdout.read)
        tail = b""
        messages: list[str] = []
        try:
            while chunk := read_some(65536):
                lines, tail = _split_lines(tail + chunk)
                for line in lines:
                    values = parse_progress(line)
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
            stdout.close()
        if tail.strip() and not parse_progress(tail):
            messages.append(tail.decode(errors="replace").strip())
        seconds = time.monotonic() - started
        if code != 0:
            output = "\n".join(messages)
            if reader:
                output = output.replace(reader, src)
            if _ENOSPC.search(output):
                raise _insufficient(dst, size)
            if cpu_limit is not None and code == -signal.SIGXCPU:
                raise exception.ConvertLimitExceeded(
                    command="convert",
                    path=src,
                    seconds=cpu_limit.seconds,
                    allocated=cpu_limit.allocated,
                )
            raise self._error("convert", src, code, output, None)
        if progress is not None:
            progress(100.0)
        LOG.info("converted %s -> %s in %.2f s", src, dst, seconds)
        return seconds
