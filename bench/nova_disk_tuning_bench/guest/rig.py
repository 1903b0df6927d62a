"""What every guest boot of a bench run shares: its work directory and private libvirtd.

The work directory is ``<path>/ndt-bench-guest``, locked (flock on
``<path>``) so that two runs on one path stay apart; what a run killed with
SIGKILL left there is ended (pid files), released (loop devices) and removed
before the next run starts. Logs of a failed boot or daemon are copied to the
run's output directory, and the one-line error says where.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nova_disk_tuning_bench.guest import datadisk, kit, procs
from nova_disk_tuning_bench.guest.daemon import PrivateLibvirtd
from nova_disk_tuning_bench.guest.errors import GuestBenchError, LibvirtdError

WORKDIR = "ndt-bench-guest"


@dataclasses.dataclass
class Rig:
    """What every boot of a run shares."""

    conn: Any
    daemon: PrivateLibvirtd
    kit: kit.GuestKit
    disks: datadisk.DataDisks
    jobs_disk: Path
    consoles: Path
    failures: Path | None


@contextlib.contextmanager
def workdir(path: Path) -> Iterator[Path]:
    """The run's own directory, after ending what a killed run left in it."""
    path.mkdir(parents=True, exist_ok=True)
    # The lock is on the directory itself: nothing is left beside the work directory.
    lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GuestBenchError(
                reason=f"another bench guest runs in {path}; wait for it or use another --path"
            ) from None
        work = path / WORKDIR
        if work.exists():
            procs.reap_pidfiles(work)
            datadisk.release_loops(work)
            shutil.rmtree(work)
        work.mkdir()
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        os.close(lock)


@contextlib.contextmanager
def daemon(work: Path, failure_dir: Path | None) -> Iterator[PrivateLibvirtd]:
    """The private libvirtd of the run, started as root and stopped at the end."""
    if os.geteuid() != 0:
        raise GuestBenchError(reason="needs root: a private libvirtd runs QEMU as root")
    private = PrivateLibvirtd(work / "libvirtd")
    try:
        try:
            private.start()
        except LibvirtdError as exc:
            first = str(exc).splitlines()[0]
            kept = keep_log(failure_dir, "libvirtd-daemons.log", private.base / "daemons.log")
            raise GuestBenchError(
                reason=f"cannot start the private libvirtd: {first}{kept}"
            ) from None
        yield private
    finally:
        private.stop()


def keep_log(failure_dir: Path | None, name: str, source: Path) -> str:
    """Copy a log into ``failure_dir``; the message part that says where it went."""
    if failure_dir is None or not source.exists():
        return ""
    failure_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, failure_dir / name)
    return f" (log: {failure_dir / name})"
