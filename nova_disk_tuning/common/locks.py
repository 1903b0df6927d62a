"""Locks between processes: named lock files in a lock directory, one prefix for all.

Every lock file of the project is ``<lock dir>/nova-disk-tuning-<name>``:
the base-image cache's entry locks, the agent's instance locks, the
disk-operation slots. They are ``fcntl``/``flock`` locks, which the kernel
releases when their holder dies, however it dies.
"""

from __future__ import annotations

import os
from typing import Any

from oslo_concurrency import lockutils

LOCK_PREFIX = "nova-disk-tuning-"


def lock_path(lock_dir: str, name: str) -> str:
    """The lock file of ``name`` in ``lock_dir``."""
    return os.path.join(lock_dir, f"{LOCK_PREFIX}{name}")


# What entering a lock with ``blocking=False`` raises when someone holds it.
Busy = lockutils.AcquireLockFailedException


def external_lock(name: str, lock_dir: str, blocking: bool = True) -> Any:
    """A lock on ``name`` held across processes (oslo.concurrency's external lock).

    ``blocking=False``: entering raises :data:`Busy` at once if it is held.
    """
    os.makedirs(lock_dir, exist_ok=True)
    return lockutils.lock(
        name, lock_file_prefix=LOCK_PREFIX, external=True, lock_path=lock_dir, blocking=blocking
    )
