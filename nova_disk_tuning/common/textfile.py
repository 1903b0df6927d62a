"""Reading a small input file whole: a config file, a record, a domain XML, a connection_info.

Every such file can turn out to be something else: a FIFO (``open`` waits
for a writer, ``read`` for it to close), ``/dev/zero`` (``read`` never
ends, until MemoryError), a directory, or gigabytes. So every file the
project reads whole is read here, one way: ``stat`` first (a device is not
even opened: opening some acts, a tape rewinds), opened ``O_NONBLOCK`` (a
FIFO swapped in after the stat cannot block the open), checked again on
the descriptor (what is read is what was checked), and read up to a limit.
Text is UTF-8, strictly: a config with a Latin-1 byte is refused with the
byte's offset rather than read as something the operator did not write.
"""

from __future__ import annotations

import errno
import os
import stat

from nova_disk_tuning import exception
from nova_disk_tuning.common.files import kind_of
from nova_disk_tuning.common.units import MiB

CONFIG_LIMIT = 1 * MiB  # nova.conf files, connection_info, ceph.conf
RECORD_LIMIT = 16 * MiB  # instance records, domain XML, benchmark results

_DEV_NULL = os.makedev(1, 3)  # the Linux device number of /dev/null, by any name
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def read_bytes(path: str, what: str, limit: int = RECORD_LIMIT) -> bytes:
    """The content of the regular file ``path``, at most ``limit`` bytes.

    ``what`` names the input in messages ("config file", "domain XML").
    FileNotFoundError and NotADirectoryError propagate (callers say what a
    missing file means to them); anything else that is not a small regular
    file raises InputUnreadable.
    """
    st = os.stat(path)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == _DEV_NULL:
        return b""  # --config-file /dev/null: "no configuration", as everywhere
    _check(path, what, st, limit)
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise
        raise exception.InputUnreadable(what=what, path=path, reason=exc.strerror) from None
    try:
        _check(path, what, os.fstat(fd), limit)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(limit + 1 - total, MiB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise exception.InputUnreadable(what=what, path=path, reason=exc.strerror) from None
    finally:
        os.close(fd)
    if total > limit:
        raise _too_large(path, what, total, limit)
    return b"".join(chunks)


def read_text(path: str, what: str, limit: int = RECORD_LIMIT) -> str:
    """:func:`read_bytes`, decoded as UTF-8; another encoding is InputUnreadable."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise exception.InputUnreadable(
            what=what,
            path=path,
            reason=f"it is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x})",
        ) from None


def _check(path: str, what: str, st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise exception.InputUnreadable(
            what=what, path=path, reason=f"it is {kind_of(st.st_mode)}; give a regular file"
        )
    if st.st_size > limit:
        raise _too_large(path, what, st.st_size, limit)


def _too_large(path: str, what: str, size: int, limit: int) -> exception.InputUnreadable:
    return exception.InputUnreadable(
        what=what,
        path=path,
        reason=f"it is {size} bytes or more, larger than any {what} ({limit} bytes at most)",
    )
