"""The one-box's processes: each in its own session, logging to a file, recorded by its run.

Each service starts in a session of its own, and its pid and start time are
recorded under ``<work directory>/pids``: a recorded leader that still runs
(same pid, same start time) identifies its whole session (gunicorn's workers,
the oslo.service workers of conductor and scheduler, privsep helpers).
Processes that leave their session (Erlang's epmd daemonises) carry
``NDT_ONEBOX_RUN=<work directory>`` in their environment, inherited from the
service. Ending a run is one mechanism, whether the run ends normally, on
Ctrl-C, or is the leftover of a run killed with -9: stop the named services in
reverse order, then :func:`reap` the recorded sessions and the marked processes.
The environment alone is not enough: gunicorn and oslo.service set process
titles over it (``/proc/<pid>/environ`` then holds the title). QEMU is neither
(libvirtd starts it): the private libvirtd ends its own guests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from nova_disk_tuning_bench.guest.procs import alive, kill_and_wait

MARK = "NDT_ONEBOX_RUN"


class OneboxError(Exception):
    """A step of the one-box failed; the message says which and where its log is."""


def _marked(pid: int, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return mark in handle.read().split(b"\0")
    except OSError:
        return False


def _stat(pid: int) -> tuple[int, int] | None:
    """(session id, start time in clock ticks) of ``pid``, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command: state ppid pgrp session ... starttime is field 22 of stat.
    return int(fields[3]), int(fields[19])


def _recorded_sessions(workdir: Path) -> set[int]:
    """Sessions whose recorded leader still runs (not a reused pid: same start time)."""
    sessions = set()
    for record in (workdir / "pids").glob("*"):
        try:
            pid, start = (int(word) for word in record.read_text().split())
        except (OSError, ValueError):
            continue
        stat = _stat(pid)
        if stat is not None and stat == (pid, start):
            sessions.add(pid)
    return sessions


def reap(workdir: Path, timeout: float = 10.0) -> list[int]:
    """End every process of ``workdir``'s run still running; the pids that were ended."""
    mark = f"{MARK}={workdir}".encode()
    sessions = _recorded_sessions(workdir)
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        stat = _stat(pid)
        if stat is not None and (stat[0] in sessions or _marked(pid, mark)):
            pids.append(pid)
    pids = [pid for pid in pids if alive(pid)]
    kill_and_wait(pids, timeout=timeout)
    return pids


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Services:
    """The processes of one run, started in order and stopped in reverse."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env[MARK] = str(self.workdir)
        env.update(extra or {})
        return env

    def log(self, name: str) -> Path:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self.logs / f"{name}.log"

    def run(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Run a set-up command to its end; its output goes to ``logs/<name>.log``."""
        with open(self.log(name), "ab") as out:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.env(env), check=False,
            )  # fmt: skip
        if done.returncode != 0:
            raise OneboxError(
                f"{name} failed (exit {done.returncode}): see {self.log(name)}\n"
                f"{tail(self.log(name))}"
            )

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log(name), "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.env(env), start_new_session=True,
            )  # fmt: skip
        self.running[name] = proc
        stat = _stat(proc.pid)
        if stat is not None:
            records = self.workdir / "pids"
            records.mkdir(exist_ok=True)
            (records / name).write_text(f"{proc.pid} {stat[1]}\n")

    def check(self, name: str) -> None:
        proc = self.running[name]
        if proc.poll() is not None:
            raise OneboxError(
                f"{name} exited with status {proc.returncode}: see {self.log(name)}\n"
                f"{tail(self.log(name))}"
            )

    def wait(self, name: str, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it holds; fail at once if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            self.check(name)
            with contextlib.suppress(OSError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise OneboxError(
                    f"{name} is not {what} after {timeout:.0f} s: see {self.log(name)}\n"
                    f"{tail(self.log(name))}"
                )
            time.sleep(0.3)

    def wait_port(self, name: str, port: int, timeout: float = 120.0) -> None:
        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        self.wait(name, listening, timeout, f"listening on 127.0.0.1:{port}")

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM the service's whole process group, SIGKILL after ``timeout``."""
        proc = self.running.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            self.stop(name)
        reap(self.workdir)
