"""[compute] max_concurrent_disk_ops across real processes."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from nova_disk_tuning import conf as ndt_conf
from nova_disk_tuning.images.diskops import DiskOpsLimiter

CTX = multiprocessing.get_context("fork")


def _hold(instances: str, limit: int, log: str, seconds: float) -> None:
    conf = ndt_conf.new_conf(
        overrides={
            "DEFAULT": {"instances_path": instances},
            "compute": {"max_concurrent_disk_ops": limit},
        }
    )
    with DiskOpsLimiter(conf, os.path.join(instances, "locks")).slot("test"):
        with open(log, "a") as handle:
            handle.write(f"start {time.monotonic()}\n")
        time.sleep(seconds)
        with open(log, "a") as handle:
            handle.write(f"end {time.monotonic()}\n")


def _max_overlap(log: str) -> int:
    with open(log) as handle:
        pairs = [line.split() for line in handle]
    events = sorted((float(t), 1 if kind == "start" else -1) for kind, t in pairs)
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("limit", [1, 2])
def test_at_most_n_operations_at_once(tmp_path, limit):
    log = str(tmp_path / "log")
    procs = [CTX.Process(target=_hold, args=(str(tmp_path), limit, log, 0.3)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert _max_overlap(log) == limit


def test_a_killed_holder_frees_its_slot(tmp_path):
    log = str(tmp_path / "log")
    holder = CTX.Process(target=_hold, args=(str(tmp_path), 1, log, 60))
    holder.start()
    deadline = time.monotonic() + 30
    while not os.path.exists(log):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    holder.kill()
    holder.join(10)
    waiter = CTX.Process(target=_hold, args=(str(tmp_path), 1, log, 0))
    waiter.start()
    waiter.join(30)
    assert waiter.exitcode == 0
