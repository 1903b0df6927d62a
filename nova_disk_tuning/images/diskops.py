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
import time
from collections.abc import Iterator

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning.common import locks

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
        waited = False
        while True:
            for index in range(limit):
                path = locks.lock_path(self.lock_dir, f"disk-ops-{index}")
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                if waited:
                    LOG.info("%s got a disk-operation slot", what)
                return fd
            if not waited:
                LOG.info(
                    "%s waits: %d disk operations already run ([compute] max_concurrent_disk_ops)",
                    what,
                    limit,
                )
                waited = True
            time.sleep(_POLL_SECONDS)
