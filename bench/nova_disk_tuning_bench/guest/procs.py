"""Processes the in-guest benchmark starts, found again by their pid files.

A run killed with SIGKILL cannot stop its private libvirtd, virtlogd and
QEMU. They all keep pid files under the run's work directory, so the next
run ends them (:func:`reap_pidfiles`) before it removes that directory: a
killed run leaves nothing behind outside it for longer than one more run.
A pid is only signalled when ``/proc/<pid>/exe`` still names the program
that wrote the file, so a recycled pid is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies."""
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After "comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(entry))
    return live


def pid_from(pidfile: Path, programs: Iterable[str], marker: str | None = None) -> int | None:
    """The pid in ``pidfile`` if that process still runs one of ``programs``.

    With ``marker``, its command line must also contain that text (a shell
    is too common a program to trust by name alone).
    """
    try:
        pid = int(pidfile.read_text().split()[0])
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None
    # A binary replaced by a package upgrade reads "qemu-system-x86_64 (deleted)".
    exe = exe.removesuffix(" (deleted)")
    if marker is not None and marker not in cmdline:
        return None
    return pid if any(exe.startswith(program) for program in programs) else None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_and_wait(pids: Iterable[int], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send ``sig`` to each pid, wait up to ``timeout``, then SIGKILL what still runs."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def reap_pidfiles(base: Path) -> list[str]:
    """End what a killed run left running under ``base``; say what was ended.

    QEMU first (SIGKILL: its guest is of no use any more), then libvirtd,
    virtlogd and the supervisor shell of their mount namespace.
    """
    ended = []
    qemus = [
        pid
        for pidfile in sorted(base.glob("**/run/qemu/*.pid"))
        if (pid := pid_from(pidfile, ("qemu-system",))) is not None
    ]
    if qemus:
        kill_and_wait(qemus, signal.SIGKILL)
        ended += [f"QEMU pid {pid}" for pid in qemus]
    daemons = []
    for pattern, programs, marker in (
        ("**/run/libvirtd.pid", ("libvirtd",), None),
        ("**/run/virtlogd.pid", ("virtlogd",), None),
        ("**/supervisor.pid", ("dash", "sh", "bash", "busybox"), str(base)),
    ):
        for pidfile in sorted(base.glob(pattern)):
            pid = pid_from(pidfile, programs, marker)
            if pid is not None:
                daemons.append(pid)
                ended.append(f"{programs[0]} pid {pid}")
    if daemons:
        kill_and_wait(daemons)
    for what in ended:
        LOG.warning("ended %s left running by an earlier run under %s", what, base)
    return ended
