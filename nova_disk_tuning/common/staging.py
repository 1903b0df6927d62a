"""Build a file or a directory under a hidden name, publish it whole, sweep what the dead left.

The one way the project makes anything appear under a final name: a
converted image (``convert`` DST), a base image in the cache and its record,
a claimed instance directory and its record. Before it, three ways with
three liveness tests existed, and a killed run could leave a partial file
under a final name or a leftover nobody would remove.

A *stage* is a hidden directory beside the final name,
``.<name>.ndt-stage-<16 hex>/``. Its owner holds an exclusive ``flock`` on
the lock file ``.ndt.lock`` inside it for its whole life. The kernel drops
the lock when the owner dies, however it dies, so the lock (not a pid,
which the kernel reuses) tells a live stage from an abandoned one. The lock
is a file of its own, not the data: qemu-img takes OFD locks on the image it
writes, and on NFS ``flock`` is emulated with the same byte-range locks.

:meth:`Stage.publish` makes the data durable, then renames it to the final
name (same directory, so one file system) and syncs the directory: a crash
leaves the old state or the whole new one. Without ``replace`` nothing that
exists is ever replaced, a dangling symlink included (``renameat2`` with
``RENAME_NOREPLACE``; ``link(2)`` where the file system lacks it);
``replace`` is for callers that hold their own lock on the final name.

:func:`sweep` removes stages whose lock nobody holds. A stage holds regular
files only; sweeping unlinks those (never follows a symlink, never descends
into a directory, so it cannot cross a mount) and removes nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
from types import TracebackType

from oslo_log import log as logging

from nova_disk_tuning.common.files import flock_held, fsync_dir, fsync_path, rename_noreplace

LOG = logging.getLogger(__name__)

MARK = ".ndt-stage-"
LOCK = ".ndt.lock"
_HEX = 16  # 64 random bits: a stage name is never reused while it exists
_STAGE = re.compile(rf"\..+{re.escape(MARK)}[0-9a-f]{{{_HEX}}}")
# NAME_MAX is 255 bytes; the dot, the mark and the suffix take 28 of them.
_MAX_NAME_BYTES = 200
_ATTEMPTS = 5
# What opening or removing someone else's entry answers: not ours to touch.
_NOT_OURS = (
    errno.ENOENT,
    errno.ENOTDIR,
    errno.ELOOP,
    errno.EACCES,
    errno.EPERM,
    errno.ENXIO,
    errno.EBUSY,
    errno.EROFS,
)


def stage_prefix(final: str) -> str:
    """The start of every stage name of ``final``: hidden, and clearly ours."""
    name = os.fsencode(os.path.basename(final))[:_MAX_NAME_BYTES]
    return f".{os.fsdecode(name)}{MARK}"


def is_stage_of(final: str, name: str) -> bool:
    """Whether the directory entry ``name`` is exactly one of the stages of ``final``."""
    prefix = stage_prefix(final)
    suffix = name[len(prefix) :]
    return name.startswith(prefix) and len(suffix) == _HEX and _is_hex(suffix)


def is_stage(name: str) -> bool:
    """Whether the directory entry ``name`` is a stage (of any final name)."""
    return _STAGE.fullmatch(name) is not None


def sweep(directory: str, final: str | None = None) -> list[str]:
    """Remove the abandoned stages in ``directory`` (only those of ``final``, if given).

    Returns the stages removed. A stage whose lock is held belongs to a
    live run and is left alone.
    """
    try:
        parent_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    removed = []
    try:
        for name in sorted(os.listdir(parent_fd)):
            if not is_stage(name) or (final is not None and not is_stage_of(final, name)):
                continue
            if remove_stage_at(parent_fd, name):
                path = os.path.join(directory, name)
                LOG.info("removed %s, left by a run that did not finish", path)
                removed.append(path)
    finally:
        os.close(parent_fd)
    return removed


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Replace the file ``path`` with ``text`` whole: the old content or the new, never a mix.

    For records whose writers hold their own lock (an instance's record,
    a cache entry's): built in a stage, published with ``replace``.
    """
    with Stage(path) as stage:
        fd = os.open(stage.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        stage.publish(replace=True)  # fsyncs the file, then the directory


class Stage:
    """A locked stage for ``final``; what is built in it becomes ``final`` only by :meth:`publish`.

    ``path`` is what the caller builds: a file named like ``final`` inside
    the stage, or with ``directory=True`` the stage directory itself (which
    becomes ``final``, its lock file with it). Use it as a context manager
    (entering sweeps the abandoned stages of ``final`` and makes ours;
    leaving removes ours unless published, and only then releases the
    lock), or :meth:`open` and :meth:`close` it.
    """

    def __init__(self, final: str, *, directory: bool = False) -> None:
        self.final = os.path.abspath(final)
        self.parent = os.path.dirname(self.final)
        self.is_directory = directory
        # The stage we made and must remove; set before anything is created,
        # because Ctrl-C and SIGTERM arrive as exceptions between any two
        # bytecodes, also right after a call returned.
        self.staging_dir: str | None = None
        self._fd = -1
        self.published = False

    @property
    def path(self) -> str:
        """The file (or, for a directory stage, the directory) to build."""
        if self.staging_dir is None:
            raise RuntimeError(f"the stage of {self.final} is not open")
        if self.is_directory:
            return self.final if self.published else self.staging_dir
        return os.path.join(self.staging_dir, os.path.basename(self.final))

    def scratch(self, name: str) -> str:
        """Another file in the stage (removed with it), e.g. an intermediate conversion."""
        if self.staging_dir is None or os.sep in name or name in ("", ".", "..", LOCK):
            raise ValueError(f"{name!r} is not a scratch file name of the stage")
        return os.path.join(self.staging_dir, name)

    # Life cycle ---------------------------------------------------------------

    def open(self) -> Stage:
        if self._fd >= 0:
            raise RuntimeError(f"the stage of {self.final} is open already")
        _refuse_long_name(self.final)  # before any work: publishing would fail at the end
        try:
            sweep(self.parent, self.final)
            self._make_locked()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Stage:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def publish(self, *, replace: bool = False, source: str | None = None) -> None:
        """Make the built file (or directory) durable and visible as ``final``.

        ``source`` is a scratch file to publish instead of :attr:`path`.
        Raises ``FileExistsError`` when something is at ``final`` and
        ``replace`` is false (nothing was replaced; the stage is kept for
        :meth:`close`), and ``OSError(EOPNOTSUPP)`` when the file system can
        publish neither by ``renameat2`` nor by ``link``.
        """
        if self.staging_dir is None or self._fd < 0:
            raise RuntimeError(f"the stage of {self.final} is not open")
        built = source or self.path
        fsync_path(built)
        if replace:
            os.rename(built, self.final)
        else:
            rename_noreplace(built, self.final, is_dir=self.is_directory)
        self.published = True
        fsync_dir(self.parent)
        LOG.debug("published %s", self.final)
        if not self.is_directory:
            self._remove_stage()

    def close(self) -> None:
        """Remove the stage unless it was published as ``final``, then release the lock."""
        try:
            if self.staging_dir is not None and not (self.is_directory and self.published):
                self._remove_stage()
        finally:
            self._release()

    def release(self) -> None:
        """Let go of the lock of a published directory stage (its owner is done)."""
        self._release()

    # Internals ------------------------------------------------------------------

    def _make_locked(self) -> None:
        """Make our stage directory and hold the flock on its lock file.

        A concurrent sweep can see the stage between its mkdir and our lock
        and remove it; so the lock file is checked once locked, and a new
        stage is made when it was swept meanwhile.
        """
        prefix = stage_prefix(self.final)
        for _ in range(_ATTEMPTS):
            self.staging_dir = os.path.join(self.parent, prefix + secrets.token_hex(_HEX // 2))
            try:
                os.mkdir(self.staging_dir, 0o700)
            except FileExistsError:
                self.staging_dir = None  # not ours; another random name
                continue
            except OSError:
                self.staging_dir = None
                raise
            try:
                # O_CLOEXEC: qemu-img must not inherit the lock, or it would outlive us.
                self._fd = os.open(
                    os.path.join(self.staging_dir, LOCK),
                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                    0o600,
                )
            except FileNotFoundError:
                self.staging_dir = None  # swept before the lock file existed
                continue
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            if os.fstat(self._fd).st_nlink > 0:
                if self.is_directory:
                    # Not 0700 once it is the final directory (an instance dir).
                    os.chmod(self.staging_dir, 0o755)
                return
            self._release()  # swept between open and flock
            self.staging_dir = None
        raise OSError(
            errno.EAGAIN,
            f"other runs removed the stage of {self.final} {_ATTEMPTS} times running",
            self.parent,
        )

    def _remove_stage(self) -> None:
        stage, self.staging_dir = self.staging_dir, None
        if stage is None:
            return
        parent_fd = os.open(self.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            stage_fd = _open_at(parent_fd, os.path.basename(stage))
            if stage_fd is not None:
                try:
                    _remove_contents(parent_fd, os.path.basename(stage), stage_fd)
                finally:
                    os.close(stage_fd)
        finally:
            os.close(parent_fd)

    def _release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def owner_alive(directory: str) -> bool:
    """Whether the owner of the published directory stage ``directory`` still runs."""
    return flock_held(os.path.join(directory, LOCK))


def remove_stage_at(parent_fd: int, name: str) -> bool:
    """Remove the stage ``name`` in the directory open as ``parent_fd`` if nobody owns it.

    The stage is opened O_NOFOLLOW (a symlink with a stage's name is not
    ours), and from there everything is relative to its descriptor: it
    cannot be swapped for a link to someone else's files under the sweep.
    """
    stage_fd = _open_at(parent_fd, name)
    if stage_fd is None:
        return False
    try:
        fd = _open_lock(stage_fd)
        if fd is None:
            # No lock file: its maker died between mkdir and creating it, or
            # is creating it now. Only an empty stage goes (rmdir): a maker
            # whose lock file appeared meanwhile keeps its stage (ENOTEMPTY),
            # and one that creates it after the rmdir finds the stage gone and
            # makes another. Emptying it here removed a live run's stage
            # (seen: racing converts, a loser's stage gone mid-convert).
            try:
                os.rmdir(name, dir_fd=parent_fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    return False
                raise
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its owner is alive
            if os.fstat(fd).st_nlink == 0:
                return False  # another sweep removed it meanwhile
            return _remove_contents(parent_fd, name, stage_fd)
        finally:
            os.close(fd)
    finally:
        os.close(stage_fd)


def _open_at(parent_fd: int, name: str) -> int | None:
    """The directory ``name`` in ``parent_fd``, opened; None if it is not a directory of ours."""
    try:
        return os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd
        )
    except OSError as exc:
        if exc.errno in _NOT_OURS:
            return None
        raise


def _open_lock(stage_fd: int) -> int | None:
    try:
        return os.open(
            LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=stage_fd
        )
    except OSError as exc:
        if exc.errno in (*_NOT_OURS, errno.EISDIR):
            return None
        raise


def _remove_contents(parent_fd: int, name: str, stage_fd: int) -> bool:
    """Unlink the stage's files (the lock last) and the stage; False if it holds anything else.

    Every entry is checked before anything is removed: a stage holds regular
    files (and its lock) only, so one holding a directory is left whole
    rather than half emptied.
    """
    entries = os.listdir(stage_fd)
    for entry in entries:
        if stat.S_ISDIR(os.stat(entry, dir_fd=stage_fd, follow_symlinks=False).st_mode):
            LOG.warning("leaving the stage %s: it holds a directory, %s", name, entry)
            return False
    for entry in sorted(entries, key=lambda n: n == LOCK):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry, dir_fd=stage_fd)
    try:
        # The name may have been swapped since it was opened: only our directory goes.
        here = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        ours = os.fstat(stage_fd)
        if (here.st_dev, here.st_ino) != (ours.st_dev, ours.st_ino):
            return False
        os.rmdir(name, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (*_NOT_OURS, errno.ENOTEMPTY, errno.EEXIST):
            return False  # not empty any more (its maker made the lock file), or not ours
        raise
    return True


def _refuse_long_name(final: str) -> None:
    """ENAMETOOLONG naming ``final`` when its file system cannot hold its name."""
    length = len(os.fsencode(os.path.basename(final)))
    try:
        limit = os.statvfs(os.path.dirname(final)).f_namemax
    except OSError:
        return  # a missing directory: making the stage says so
    if length > limit:
        raise OSError(
            errno.ENAMETOOLONG,
            f"the name is {length} bytes, more than the {limit} its file system allows; "
            "choose a shorter name",
            final,
        )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
