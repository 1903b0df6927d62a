"""A host-wide limit on concurrent disk-intensive operations.

``[compute] max_concurrent_disk_ops`` = N is N slot files under the lock
directory; an operation holds an exclusive ``flock`` on one of them. flock
locks are released by the kernel when their holder dies, so a killed
conversion never keeps a slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning.common import locks
from nova_disk_tuning.conf import lock_wait_timeout

LOG = logging.getLogger(__name__)
_POLL_SECONDS = 0.2


class DiskOpsLimiter:
    def __init__(self, conf: cfg.ConfigOpts, lock_dir: str) -> None:
        self.conf = conf
        self.lock_dir = lock_dir

    @contextlib.contextmanager
    def slot(self, what: str) -> Iterator[None]:
        limit = self.conf.compute.max_concurrent_disk_ops
        if limit == 0:
            yield
            return
        os.makedirs(self.lock_dir, exist_ok=True)
        fd = self._acquire(limit, what)
        try:
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _acquire(self, limit: int, what: str) -> int:
        paths = [locks.lock_path(self.lock_dir, f"disk-ops-{index}") for index in range(limit)]
        got: list[int] = []

        def try_a_slot() -> bool:
            for path in paths:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                got.append(fd)
                return True
            return False

        locks.wait_for(
            try_a_slot,
            paths,
            f"a disk-operation slot for {what} ([compute] max_concurrent_disk_ops = {limit})",
            lock_wait_timeout(self.conf),
        )
        return got[0]
