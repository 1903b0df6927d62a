"""One entry of the base-image cache on disk: its name, its record, its use lock.

An entry is ``<sha1(image id)>`` (the image) with ``<sha1>.info`` beside it
(JSON: image id, format, virtual size and the :func:`identity` of the file
that was checked) and, while spawns make disks from it,
``<sha1>.use`` (a shared ``flock`` per spawn; prune asks for it exclusively).
Nothing here takes the entry lock: :class:`~nova_disk_tuning.images.cache.ImageCache`
calls these with it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import struct
from collections.abc import Iterator
from typing import Any

from nova_disk_tuning import exception
from nova_disk_tuning.common import textfile
from nova_disk_tuning.common.files import flock_held
from nova_disk_tuning.common.staging import write_atomic
from nova_disk_tuning.images.source import QCOW2_MAGIC

ENTRY_NAME = re.compile(r"^[0-9a-f]{40}$")


def meta_path(path: str) -> str:
    return f"{path}.info"


def use_lock_path(path: str) -> str:
    return f"{path}.use"


def read_meta(path: str) -> dict[str, Any] | None:
    """The entry's record, or None if it is missing or not one of ours."""
    try:
        meta = json.loads(
            textfile.read_text(meta_path(path), "cache record", textfile.CONFIG_LIMIT)
        )
    except (OSError, ValueError, exception.InputUnreadable):
        return None
    if not isinstance(meta, dict) or not {"format", "virtual_size"} <= meta.keys():
        return None
    return meta


def identity(path: str) -> list[int]:
    """What tells the cached file from any other: inode, size and change time.

    The change time, not the modification time: ``cp -p`` and ``rsync -t``
    restore an mtime, nothing but the kernel sets a ctime (any write,
    truncate, chmod or rename moves it).
    """
    st = os.stat(path)
    return [st.st_ino, st.st_size, st.st_ctime_ns]


def write_meta(path: str, meta: dict[str, Any]) -> None:
    """Write the entry's record whole and durably (the caller holds the entry lock)."""
    write_atomic(meta_path(path), json.dumps(meta))


@contextlib.contextmanager
def mark_in_use(path: str) -> Iterator[None]:
    """A shared flock on the entry's use lock: any number of spawns at once."""
    fd = os.open(use_lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def used_by_a_spawn(path: str) -> bool:
    """Whether a spawn holds the entry's use lock (prune takes it exclusively)."""
    return flock_held(use_lock_path(path))


def qcow2_backing_file(path: str) -> str | None:
    """The backing file named in a qcow2 header, read without qemu-img."""
    try:
        # Non-blocking and no symlinks: instance directories may hold FIFOs
        # (a console pipe) or links that a plain open would hang on or follow.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            header = handle.read(20)
            if len(header) < 20 or header[:4] != QCOW2_MAGIC:
                return None
            offset, length = struct.unpack(">QI", header[8:20])
            if not offset or not 0 < length <= 1023:
                return None
            handle.seek(offset)
            return handle.read(length).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)
