"""Locks between processes: named lock files in a lock directory, one prefix for all.

Every lock file of the project is ``<lock dir>/nova-disk-tuning-<name>``:
the base-image cache's entry locks, the agent's instance locks, the
disk-operation slots. They are ``fcntl``/``flock`` locks, which the kernel
releases when their holder dies, however it dies.

A holder that does not die can still stop (SIGSTOP, a debugger, a hung
NFS server), and then everything after it waits. So no wait here is
silent or endless: :func:`wait_for` says at once, and every
:data:`REPORT_SECONDS` after, which process holds the lock and whether it
is stopped (from ``/proc/locks``, which lists flock, POSIX and OFD locks
with the inode they are on), and gives up after the caller's timeout with
one line saying what to do.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence

from oslo_concurrency import lockutils
from oslo_log import log as logging

from nova_disk_tuning import exception

LOG = logging.getLogger(__name__)

LOCK_PREFIX = "nova-disk-tuning-"
REPORT_SECONDS = 30.0
_POLL_SECONDS = 0.1

# What entering a lock with ``blocking=False`` raises when someone holds it.
Busy = lockutils.AcquireLockFailedException


def lock_path(lock_dir: str, name: str) -> str:
    """The lock file of ``name`` in ``lock_dir``."""
    return os.path.join(lock_dir, f"{LOCK_PREFIX}{name}")


@contextlib.contextmanager
def external_lock(
    name: str,
    lock_dir: str,
    blocking: bool = True,
    *,
    what: str | None = None,
    timeout: float | None = None,
) -> Iterator[None]:
    """A lock on ``name`` held across processes and across threads of this one.

    oslo.concurrency's two halves: its semaphore for the threads of this
    process (POSIX record locks are per process, so two threads would both
    get the file lock) and its lock file for other processes. ``blocking``
    False: entering raises :data:`Busy` at once if either is held. Else the
    wait is :func:`wait_for`'s: reported, and given up after ``timeout``
    seconds (None: never) with :class:`~nova_disk_tuning.exception.LockTimeout`.
    """
    os.makedirs(lock_dir, exist_ok=True)
    what = what or f"the lock {name}"
    deadline = None if timeout is None else time.monotonic() + timeout
    semaphore = lockutils.internal_lock(name)
    if not semaphore.acquire(blocking=False):
        if not blocking:
            raise Busy(name)
        # Another thread of this process holds it: it reports its own wait.
        if not semaphore.acquire(timeout=_remaining(deadline)):
            raise exception.LockTimeout(
                what=what, seconds=timeout, holder=f"another thread of process {os.getpid()}"
            )
    try:
        file_lock = lockutils.external_lock(name, lock_file_prefix=LOCK_PREFIX, lock_path=lock_dir)
        if not file_lock.acquire(blocking=False):
            if not blocking:
                raise Busy(name)
            wait_for(
                lambda: bool(file_lock.acquire(blocking=False)),
                [file_lock.path],
                what,
                _remaining(deadline),
            )
        try:
            yield
        finally:
            file_lock.release()
    finally:
        semaphore.release()


def wait_for(
    try_lock: Callable[[], bool],
    paths: Sequence[str],
    what: str,
    timeout: float | None,
) -> None:
    """Call ``try_lock`` until it succeeds, saying who holds ``paths`` while it fails.

    The first report comes at once, then every :data:`REPORT_SECONDS`;
    after ``timeout`` seconds (None: never) LockTimeout names the holder.
    """
    started = time.monotonic()
    next_report = started
    while not try_lock():
        now = time.monotonic()
        if timeout is not None and now - started >= timeout:
            raise exception.LockTimeout(what=what, seconds=timeout, holder=describe(paths))
        if now >= next_report:
            LOG.warning("waiting for %s: %s", what, describe(paths))
            next_report = now + REPORT_SECONDS
        time.sleep(_POLL_SECONDS)
    if next_report > started:
        LOG.info("got %s after %.1f s", what, time.monotonic() - started)


def describe(paths: Sequence[str]) -> str:
    """Who holds the locks on ``paths``: each process, and whether it is stopped."""
    pids = sorted({pid for path in paths for pid in holders(path)})
    if not pids:
        return "held by a process this host does not show (an OFD lock or another host)"
    return "held by " + ", ".join(_process(pid) for pid in pids)


def holders(path: str) -> list[int]:
    """The pids /proc/locks shows holding a lock on the file ``path``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found = []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "->" marks a waiter.
                if len(fields) >= 6 and fields[1] != "->" and fields[5] == inode:
                    with contextlib.suppress(ValueError):
                        if int(fields[4]) > 0:  # OFD locks show -1: no owner pid
                            found.append(int(fields[4]))
    except OSError:
        return []
    return found


def _process(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # "pid (comm) S ...": the state follows the last ")".
            state = handle.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return f"process {pid}"
    command = " ".join(os.fsdecode(a) for a in argv if a)[:120]
    stopped = (
        f", which is stopped: continue it (kill -CONT {pid}) or end it"
        if state in ("T", "t")
        else ""
    )
    return f"process {pid} ({command}){stopped}"


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
