"""File helpers whose only error is the one they expect."""

from __future__ import annotations

import os


def remove_if_exists(path: str) -> bool:
    """Unlink ``path``; False if it was already gone (any other error is raised)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def fsync_dir(directory: str) -> None:
    """Make a create, rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
