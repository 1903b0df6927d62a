"""What a resize or cold migration copies on one host: the data, not the preallocation.

Nova copies each local disk of a resized or cold-migrated instance with
``cp -r`` when the instances path is the destination's too (the same host,
or a shared file system), and with ``rsync --sparse`` to another host. A
preallocated disk has no holes for ``cp`` to skip: its allocated but
unwritten extents read as zeroes and ``cp`` writes every one of them
(``bench --only resize``: a 4 GiB preallocated raw disk with a tenth
written took 6.6 s against 0.86 s for Nova's own sparse disk). The drop-in
copies only the data (``nova_disk_tuning.storage.copy``, in a process of its
own, as Nova's ``cp`` is) and ``finish_migration`` then preallocates the
copy as a spawn does (the image backends' ``cache``), one fallocate.

Nova calls ``nova.virt.libvirt.utils.copy_image`` by that name, so the
wrapper below stands in for it there; it changes the copy only inside the
drop-in's ``migrate_disk_and_power_off`` (:func:`sparse_copies`) and only
for a copy on this host. Everything else reaches Nova's own function, with
Nova's arguments.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import Any

from nova.virt.libvirt import utils as libvirt_utils
from oslo_concurrency import processutils

from nova_disk_tuning.storage.copy import sparse_copy_argv

_SPARSE: contextvars.ContextVar[bool] = contextvars.ContextVar("ndt_sparse_copy", default=False)
# Nova's function as Nova defines it (not whatever stands in for it later).
_NOVA_COPY_IMAGE = libvirt_utils.copy_image


def copy_image(
    src: str,
    dest: str,
    host: str | None = None,
    receive: bool = False,
    on_execute: Callable[..., Any] | None = None,
    on_completion: Callable[..., Any] | None = None,
    compression: bool = True,
) -> None:
    """Nova's ``copy_image``, with runs of zeroes left as holes on this host."""
    # A directory (a ploop disk), a destination already there, or a process
    # embedded without a Python to start the copy with: Nova's cp.
    local = not host and _SPARSE.get() and bool(sys.executable)
    if not local or not _regular(src) or os.path.lexists(dest):
        _NOVA_COPY_IMAGE(
            src,
            dest,
            host=host,
            receive=receive,
            on_execute=on_execute,
            on_completion=on_completion,
            compression=compression,
        )
        return
    # The job tracker learns the pid, so a cleanup can stop the copy as it
    # stops Nova's.
    processutils.execute(
        *sparse_copy_argv(src, dest), on_execute=on_execute, on_completion=on_completion
    )


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def sparse_copies() -> Iterator[None]:
    """Within: the disks Nova copies on this host are copied sparse."""
    token = _SPARSE.set(True)
    try:
        yield
    finally:
        _SPARSE.reset(token)


def install() -> None:
    """Put :func:`copy_image` where Nova calls it (once; a test's mock stays)."""
    if libvirt_utils.copy_image is _NOVA_COPY_IMAGE:
        libvirt_utils.copy_image = copy_image
