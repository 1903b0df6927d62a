"""Fast zero: the fastest method the storage supports, remembered per storage.

The chain comes from ovirt-imageio (oVirt bug 1615144), where it made
zeroing orders of magnitude faster than writing zeroes:

files, allocate (the range stays allocated):
    zero_range            fallocate(ZERO_RANGE)
    punch_hole+allocate   fallocate(PUNCH_HOLE|KEEP_SIZE) then fallocate(0)
                          ("allocate" when the range lies wholly past EOF)
    write                 zero writes, O_DIRECT where the file system allows
files, sparse (the range may become holes):
    punch_hole            fallocate(PUNCH_HOLE|KEEP_SIZE), then as allocate
block devices, allocate:
    zero_range            fallocate(ZERO_RANGE): WRITE ZEROES without unmap
    blkzeroout            ioctl(BLKZEROOUT), for kernels before 4.9
block devices, sparse:
    punch_hole            fallocate(PUNCH_HOLE|KEEP_SIZE): WRITE ZEROES that
                          may unmap, then as allocate

BLKDISCARD is never used: a discard does not promise that reads return
zeroes (the kernel dropped discard_zeroes_data in 4.12 because devices lied
about it). PUNCH_HOLE on a block device is the kernel's guaranteed-zero
form of "zero and deallocate"; it fails with EOPNOTSUPP instead of falling
back to writes, which is why it goes first only in sparse mode.

Only EOPNOTSUPP (and ENODEV from block devices) moves down the chain; any
other error is raised. What failed is remembered per file system (st_dev)
or device (st_rdev), so the next call starts at the step that works.
A range past EOF is refused unless the caller passes ``extend=True``; then
it extends the file, as writing zeroes would.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import mmap
import os
import stat
import time
from collections.abc import Callable

from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common.units import MiB
from nova_disk_tuning.storage import blockdev, holders
from nova_disk_tuning.storage import fallocate as falloc
from nova_disk_tuning.storage.probe import StorageProbe, storage_key

LOG = logging.getLogger(__name__)

# Zero writes go out 8 MiB at a time: the size dd comparisons use; larger
# buffers measured no faster on virtio disks.
WRITE_CHUNK = 8 * MiB
# O_DIRECT alignment good for every device (512e and 4Kn).
DIRECT_ALIGN = 4096

_FILE_STEPS = {
    False: ("zero_range", "punch_hole+allocate", "write"),
    True: ("punch_hole", "zero_range", "punch_hole+allocate", "write"),
}
_BLOCK_STEPS = {
    False: ("zero_range", "blkzeroout"),
    True: ("punch_hole", "zero_range", "blkzeroout"),
}
# The kernel operations each step needs; a step is skipped once one of them
# is known to be unsupported on the storage.
_NEEDS = {
    "zero_range": {"zero_range"},
    "punch_hole": {"punch_hole"},
    "punch_hole+allocate": {"punch_hole", "allocate"},
    "blkzeroout": {"blkzeroout"},
    "write": set(),
}


@dataclasses.dataclass(frozen=True)
class ZeroResult:
    method: str  # the step that zeroed the range, see the module docstring
    bytes: int
    seconds: float  # the zeroing and the flush that makes it durable


class _Unsupported(Exception):
    def __init__(self, operation: str, err: OSError) -> None:
        super().__init__(operation)
        self.operation = operation
        self.err = err


class Zeroer:
    def __init__(self, probe: StorageProbe | None = None) -> None:
        self._probe = probe or StorageProbe()
        self._unsupported: dict[tuple[str, int], set[str]] = {}

    def unsupported(self, path: str) -> frozenset[str]:
        """Operations found unsupported on the storage of path so far."""
        return frozenset(self._unsupported.get(storage_key(os.stat(path)), ()))

    def zero(
        self,
        path: str,
        offset: int = 0,
        length: int | None = None,
        sparse: bool = False,
        extend: bool = False,
    ) -> ZeroResult:
        """Zero [offset, offset + length) of a file or block device (default: all of it).

        A range past the end of a file is refused unless ``extend``: zeroing
        must not change a disk's size by accident (a block device has no such
        choice).
        """
        # Never a disk something else holds (mounted, swap, a loop device's
        # file, open in QEMU), and never a character device or a FIFO.
        fd = holders.open_for_writing(path, "zero")
        try:
            return self.zero_fd(fd, offset, length, sparse, path=path, extend=extend)
        finally:
            os.close(fd)

    def zero_fd(
        self,
        fd: int,
        offset: int = 0,
        length: int | None = None,
        sparse: bool = False,
        flush: bool = True,
        path: str | None = None,
        extend: bool = False,
    ) -> ZeroResult:
        """As zero() on an open, writable fd; flush=False leaves the flush to the caller."""
        path = path or f"/proc/self/fd/{fd}"
        st = os.fstat(fd)
        block = stat.S_ISBLK(st.st_mode)
        size = blockdev.device_size(fd) if block else st.st_size
        if length is None:
            length = max(size - offset, 0)
        if offset < 0 or length < 0:
            raise exception.InvalidRange(
                path=path, reason=f"offset {offset} and length {length} must not be negative"
            )
        if offset + length > size and (block or not extend):
            what = "device" if block else "file"
            raise exception.InvalidRange(
                path=path,
                reason=f"{offset}+{length} ends past the {what}'s {size} bytes; shorten the range",
            )
        if length == 0:
            return ZeroResult("none", 0, 0.0)
        key = storage_key(st)
        start = time.monotonic()
        try:
            if block:
                method = self._zero_block(fd, key, path, offset, length, sparse)
            else:
                method = self._run(
                    _FILE_STEPS[sparse],
                    key,
                    path,
                    lambda step: self._file_step(step, fd, offset, length, path),
                )
            if flush:
                os.fsync(fd)
        except OSError as exc:
            # Zero writes, ftruncate and fsync: ENOSPC, EIO, EROFS...
            raise exception.StorageError(
                operation="zero",
                path=path,
                reason=f"{exc.strerror} ({falloc.errname(exc.errno)}) while zeroing "
                f"{length} bytes at offset {offset}",
            ) from exc
        return ZeroResult(method, length, time.monotonic() - start)

    # The chain ------------------------------------------------------------

    def _run(
        self,
        steps: tuple[str, ...],
        key: tuple[str, int],
        path: str,
        do: Callable[[str], str],
    ) -> str:
        known = self._unsupported.setdefault(key, set())
        failed: list[str] = []
        for step in steps:
            if _NEEDS[step] & known:
                LOG.debug(
                    "Zero %s: skipping %s (%s unsupported here, remembered)",
                    path,
                    step,
                    ", ".join(sorted(_NEEDS[step] & known)),
                )
                continue
            try:
                method = do(step)
            except _Unsupported as exc:
                known.add(exc.operation)
                failed.append(f"{exc.operation.upper()} ({falloc.errname(exc.err.errno)})")
                continue
            if failed:
                LOG.info(
                    "%s unsupported on %s, zeroed %s with %s",
                    ", ".join(failed),
                    self._where(path),
                    path,
                    method,
                )
            return method
        raise exception.StorageError(
            operation="zero",
            path=path,
            reason=f"no zeroing method works here (unsupported: {', '.join(sorted(known))})",
        )

    def _where(self, path: str) -> str:
        try:
            return self._probe.fs_type(path)
        except (OSError, exception.StorageError):
            return "this storage"

    # Files -----------------------------------------------------------------

    def _file_step(self, step: str, fd: int, offset: int, length: int, path: str) -> str:
        end = offset + length
        eof = os.fstat(fd).st_size
        inside = (offset, min(end, eof) - offset) if offset < eof else None
        beyond = (max(offset, eof), end - max(offset, eof)) if end > eof else None
        if step == "zero_range":
            _call(fd, falloc.FALLOC_FL_ZERO_RANGE, offset, length, "zero_range", path)
            return step
        if step == "punch_hole":
            if inside:
                _call(fd, _PUNCH, *inside, "punch_hole", path)
            if beyond:
                os.ftruncate(fd, end)  # a hole: zero and unallocated
            return step
        if step == "punch_hole+allocate":
            if inside:
                _call(fd, _PUNCH, *inside, "punch_hole", path)
            _call(fd, 0, offset, length, "allocate", path)
            return step if inside else "allocate"
        _write_zeroes(fd, offset, length)
        return "write"

    # Block devices ---------------------------------------------------------

    def _zero_block(
        self, fd: int, key: tuple[str, int], path: str, offset: int, length: int, sparse: bool
    ) -> str:
        # Devices take only whole logical blocks (BLKSSZGET: 4096 on 4Kn
        # disks, EINVAL otherwise). The unaligned head and tail are zeroed
        # through the page cache, which reads, modifies and writes the block.
        lbs = blockdev.logical_block_size(fd)
        end = offset + length
        first = -(-offset // lbs) * lbs
        last = end // lbs * lbs
        method = "write"
        if first < last:

            def do(step: str) -> str:
                if step == "blkzeroout":
                    _call(fd, None, first, last - first, "blkzeroout", path, block=True)
                else:
                    mode = _PUNCH if step == "punch_hole" else falloc.FALLOC_FL_ZERO_RANGE
                    _call(fd, mode, first, last - first, step, path, block=True)
                return step

            method = self._run(_BLOCK_STEPS[sparse], key, path, do)
        edges = [(offset, min(first, end) - offset), (max(last, first), end - max(last, first))]
        edges = [(o, n) for o, n in edges if n > 0]
        if edges:
            LOG.debug(
                "Zero %s: %s unaligned bytes written at the edges (%d-byte blocks)",
                path,
                sum(n for _, n in edges),
                lbs,
            )
            _write_buffered(fd, edges)
        return method


_PUNCH = falloc.FALLOC_FL_PUNCH_HOLE | falloc.FALLOC_FL_KEEP_SIZE


def _call(
    fd: int, mode: int | None, offset: int, length: int, op: str, path: str, block: bool = False
) -> None:
    """Run one kernel operation; EOPNOTSUPP (ENODEV for devices) becomes _Unsupported."""
    # Device drivers without the operation may answer ENODEV (seen by oVirt).
    moving = {errno.EOPNOTSUPP, errno.ENODEV} if block else {errno.EOPNOTSUPP}
    try:
        if mode is None:
            blockdev.zeroout(fd, offset, length)
        else:
            falloc.fallocate(fd, mode, offset, length)
    except OSError as exc:
        if exc.errno in moving:
            raise _Unsupported(op, exc) from exc
        raise exception.StorageError(
            operation=f"zero ({op})",
            path=path,
            reason=f"{exc.strerror} ({falloc.errname(exc.errno)}) "
            f"at offset {offset}, length {length}",
        ) from exc


def _write_zeroes(fd: int, offset: int, length: int) -> None:
    """The last resort: write zeroes, the aligned middle with O_DIRECT if allowed."""
    end = offset + length
    first = -(-offset // DIRECT_ALIGN) * DIRECT_ALIGN
    last = end // DIRECT_ALIGN * DIRECT_ALIGN
    edges = [(offset, min(first, end) - offset), (max(last, first), end - max(last, first))]
    _write_buffered(fd, [(o, n) for o, n in edges if n > 0])
    if first >= last:
        return
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    direct = False
    try:
        # O_DIRECT keeps gigabytes of zeroes out of the page cache; file
        # systems without it (tmpfs before 6.6) refuse the flag with EINVAL.
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        direct = True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        LOG.info("O_DIRECT unavailable for zero writes (EINVAL), writing through the page cache")
    try:
        _write_range(fd, first, last - first)
    finally:
        if direct:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _write_buffered(fd: int, ranges: list[tuple[int, int]]) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & os.O_DIRECT:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
    try:
        for offset, length in ranges:
            _write_range(fd, offset, length)
    finally:
        if flags & os.O_DIRECT:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _write_range(fd: int, offset: int, length: int) -> None:
    """pwrite zeroes over [offset, offset + length).

    Every buffer is released by a context manager even when a write fails:
    an mmap with a live memoryview cannot close (BufferError), and that
    error would replace the ENOSPC or EIO the caller must see.
    """
    size = min(WRITE_CHUNK, -(-length // mmap.PAGESIZE) * mmap.PAGESIZE)
    with mmap.mmap(-1, size) as buf, memoryview(buf) as view:
        while length:
            with view[: min(length, size)] as chunk:
                try:
                    n = os.pwrite(fd, chunk, offset)
                except OSError as exc:
                    raise OSError(exc.errno, f"{exc.strerror} writing at offset {offset}") from exc
            offset += n
            length -= n
