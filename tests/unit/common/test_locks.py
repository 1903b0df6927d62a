"""Lock waits say who holds the lock and end: real processes holding real locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.common import locks

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
{lock}
print("held", flush=True)
time.sleep(60)
"""
FLOCK = "fcntl.flock(fd, fcntl.LOCK_EX)"
POSIX = "fcntl.lockf(fd, fcntl.LOCK_EX)"


@pytest.fixture
def holder():
    procs: list[subprocess.Popen] = []

    def start(path: str, how: str = FLOCK) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD.format(lock=how), path], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        return proc

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("how", [FLOCK, POSIX], ids=["flock", "posix"])
def test_holders_are_read_from_proc_locks(tmp_path, holder, how):
    path = str(tmp_path / "lock")
    proc = holder(path, how)
    assert locks.holders(path) == [proc.pid]
    assert locks.holders(str(tmp_path / "missing")) == []


def test_a_stopped_holder_is_said_to_be_stopped(tmp_path, holder):
    path = str(tmp_path / "lock")
    proc = holder(path)
    assert "stopped" not in locks.describe([path])
    proc.send_signal(signal.SIGSTOP)
    stopped = f"while ! grep -q '^State:.*T' /proc/{proc.pid}/status; do :; done"
    subprocess.run(["sh", "-c", stopped], timeout=30)
    said = locks.describe([path])
    assert f"process {proc.pid} (" in said and f"kill -CONT {proc.pid}" in said


def test_the_wait_for_a_file_lock_times_out_naming_the_holder(tmp_path, holder):
    proc = holder(locks.lock_path(str(tmp_path), "thing"), POSIX)  # oslo's external locks: lockf
    thing = locks.external_lock("thing", str(tmp_path), what="the thing", timeout=0.3)
    with pytest.raises(exception.LockTimeout) as caught, thing:
        pytest.fail("got a lock another process holds")
    said = str(caught.value)
    assert "waiting for the thing" in said and f"process {proc.pid}" in said


def test_not_blocking_is_busy_at_once(tmp_path, holder):
    holder(locks.lock_path(str(tmp_path), "thing"), POSIX)
    with pytest.raises(locks.Busy), locks.external_lock("thing", str(tmp_path), blocking=False):
        pytest.fail("got a lock another process holds")


def test_a_free_lock_is_taken_and_released(tmp_path):
    for _ in range(2):
        with locks.external_lock("thing", str(tmp_path), timeout=0.3):
            held = locks.holders(locks.lock_path(str(tmp_path), "thing"))
            assert held == [os.getpid()]
