"""Publish a file under its final name atomically, never replacing anything.

Why this exists: ``convert SRC DST`` used to write DST under its final name
and unlink DST on failure. Two runs to one DST then deleted each other's
output, a dangling symlink at DST was followed and then removed, and a killed
run left a full-size file of wrong content under the final name.

So the work happens in a hidden temporary file beside the destination
(``.<name>.ndt-convert-<16 hex>``: same directory, so publishing is a link on
one file system). Its owner holds an exclusive ``flock`` on it for its whole
life; the kernel drops the lock when the owner dies, however it dies, which
is how a later run tells an abandoned temporary file from a live one.
Publishing is ``link(2)``: it fails with EEXIST when anything at all is at
the final name (a dangling symlink included) and never follows a symlink, so
nothing is ever replaced. Clean-up only ever removes our own temporary names.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
from types import TracebackType

from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common.files import fsync_dir, remove_if_exists

LOG = logging.getLogger(__name__)

TEMP_MARK = ".ndt-convert-"
_SUFFIX_HEX = 16  # 64 random bits: a name is never reused while its file exists
_SUFFIX = re.compile(rf"[0-9a-f]{{{_SUFFIX_HEX}}}")
# NAME_MAX is 255 bytes; the dot, the mark and the suffix take 30 of them.
_MAX_NAME_BYTES = 200
_CREATE_ATTEMPTS = 5
# As qemu-img creates images: never group- or world-writable (umask applies too).
_MODE = 0o644


def destination_directory(dst: str) -> str:
    return os.path.dirname(os.path.abspath(dst))


def temp_prefix(dst: str) -> str:
    """The start of every temporary name for ``dst``: hidden, and clearly ours."""
    name = os.fsencode(os.path.basename(dst))[:_MAX_NAME_BYTES]
    return f".{os.fsdecode(name)}{TEMP_MARK}"


def is_temp_of(dst: str, name: str) -> bool:
    """Whether ``name`` (a directory entry) is exactly one of our temporary names for ``dst``."""
    prefix = temp_prefix(dst)
    return name.startswith(prefix) and _SUFFIX.fullmatch(name[len(prefix) :]) is not None


def check_destination(dst: str) -> None:
    """Refuse up front, in one line, a destination that cannot be published.

    ``lexists``, not ``exists``: a dangling symlink is something the user put
    there, and link(2) would refuse it at the end anyway.
    """
    if os.path.islink(dst) and not os.path.exists(dst):
        raise exception.ImageError(
            path=dst,
            reason="the destination is a dangling symlink; remove it or choose another name",
        )
    if os.path.lexists(dst):
        raise exception.ImageError(
            path=dst, reason="the destination exists; remove it or choose another name"
        )
    if not os.path.basename(dst):
        raise exception.ImageError(path=dst, reason="the destination must name a file")
    directory = destination_directory(dst)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise exception.ImageError(path=dst, reason=f"{directory} is not a directory")
    if not os.path.isdir(directory):
        raise exception.ImageError(
            path=dst, reason=f"the directory {directory} does not exist; create it first"
        )


def sweep_stale(dst: str) -> list[str]:
    """Remove the temporary files of ``dst`` whose owner is gone; return their paths.

    A temporary file whose flock we can take has no live owner (the kernel
    released it when the owner died). One still locked belongs to a run in
    progress and is left alone.
    """
    directory = destination_directory(dst)
    removed = []
    with os.scandir(directory) as entries:
        names = [entry.name for entry in entries if is_temp_of(dst, entry.name)]
    for name in names:
        path = os.path.join(directory, name)
        if _remove_if_abandoned(path):
            LOG.info("removed %s, left by a convert that did not finish", path)
            removed.append(path)
    return removed


class StagedFile:
    """A locked, empty temporary file beside ``dst`` that becomes ``dst`` only by :meth:`publish`.

    A context manager: entering sweeps the abandoned temporary files of
    ``dst`` and makes ours; leaving removes ours (unless published) and only
    then releases its lock. ``path`` is its name while the block runs.
    """

    def __init__(self, dst: str) -> None:
        self.dst = dst
        self.directory = destination_directory(dst)
        # The name we may have made and must remove; set *before* the file
        # is created, because Ctrl-C and SIGTERM arrive as exceptions between
        # any two bytecodes, including right after the open returns.
        self.path: str | None = None
        self._fd = -1
        self.published = False

    def __enter__(self) -> StagedFile:
        # __exit__ does not run when __enter__ raises: undo here what was made.
        try:
            sweep_stale(self.dst)
            self._create_locked()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def publish(self) -> None:
        """Make the staged content durable and visible as ``dst``, unless ``dst`` appeared.

        Order matters: the data is on disk before the name points at it, and
        the directory is synced after the temporary name is gone, so a crash
        leaves either nothing or the complete file under the final name.
        """
        assert self.path is not None and self._fd >= 0, "publish() inside the with block"
        os.fsync(self._fd)
        try:
            os.link(self.path, self.dst)
        except FileExistsError:
            self.close()
            raise exception.ImageError(
                path=self.dst,
                reason="it appeared while converting (made by someone else); "
                "nothing was replaced and the conversion was discarded",
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):
                raise
            self.close()
            raise exception.ImageError(
                path=self.dst,
                reason=f"the file system of {self.directory} has no hard links, which "
                "publishing without replacing needs; convert into another directory",
            ) from None
        self.published = True
        _unlink_if_same(self.path, self._fd)
        fsync_dir(self.directory)
        LOG.info("published %s", self.dst)

    def close(self) -> None:
        """Remove the temporary file, then release its lock (idempotent).

        Removing first: once the lock is gone, another run's sweep may take
        the name for abandoned.
        """
        try:
            if self.path is not None and self._fd >= 0:
                _unlink_if_same(self.path, self._fd)
            elif self.path is not None:
                # Interrupted between creating the file and keeping its fd:
                # the name is random and was created with O_EXCL, so it is ours.
                remove_if_exists(self.path)
        finally:
            self.path = None
            self._release()

    def _create_locked(self) -> None:
        """Create our temporary file and hold an exclusive flock on it.

        A concurrent sweep can see the file between open and flock, lock it
        and remove it. So the name is checked again once locked (and a new one
        tried if it is gone): the lock we hold is on the file under our name.
        """
        prefix = temp_prefix(self.dst)
        for _ in range(_CREATE_ATTEMPTS):
            self.path = os.path.join(self.directory, prefix + secrets.token_hex(_SUFFIX_HEX // 2))
            try:
                # O_CLOEXEC: qemu-img must not inherit the lock, or it would outlive us.
                self._fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _MODE
                )
            except FileExistsError:
                self.path = None  # not ours; another random name
                continue
            except OSError:
                self.path = None  # nothing was made
                raise
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._release()  # a sweep holds it and removes it
                self.path = None
                continue
            if _names(self.path, self._fd):
                return
            self._release()  # swept between open and flock
            self.path = None
        raise exception.ImageError(
            path=self.directory,
            reason=f"could not create a temporary file after {_CREATE_ATTEMPTS} attempts",
        )

    def _release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _remove_if_abandoned(path: str) -> bool:
    try:
        # O_NOFOLLOW: a symlink with our name is not ours. O_NONBLOCK: a FIFO
        # with our name must not hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.EACCES, errno.ENXIO):
            raise
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            LOG.info("%s is locked by a convert in progress; leaving it", path)
            return False
        return _unlink_if_same(path, fd)
    finally:
        os.close(fd)


def _names(path: str, fd: int) -> bool:
    """Whether ``path`` is (still) a name of the file open as ``fd``."""
    try:
        named = os.lstat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _unlink_if_same(path: str, fd: int) -> bool:
    """Unlink ``path`` only while it names the file open as ``fd``: never someone else's."""
    if not _names(path, fd):
        return False
    remove_if_exists(path)
    return True
