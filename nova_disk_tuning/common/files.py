"""File helpers whose only error is the one they expect."""

from __future__ import annotations

import fcntl
import os


def remove_if_exists(path: str) -> bool:
    """Unlink ``path``; False if it was already gone (any other error is raised)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def fsync_path(path: str) -> None:
    """Make a file's (or a directory's) content durable, by its name."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str) -> None:
    """Make a create, rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flock_held(path: str) -> bool:
    """Whether a live process holds a ``flock`` on ``path`` (False if it is missing).

    Asked by trying an exclusive lock without waiting, and letting it go at
    once: flock locks die with their holder, so only a running owner answers.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
