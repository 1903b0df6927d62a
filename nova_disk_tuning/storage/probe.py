"""What the storage under a path can do, probed once and remembered.

One StorageProbe is one cache: results are kept per file system (st_dev)
or per block device (st_rdev), so a second question about the same storage
does no I/O. Nothing is assumed from the file-system name: tmpfs gained
O_DIRECT in Linux 6.6, and NFS answers depend on the server.
"""

from __future__ import annotations

import dataclasses
import errno
import mmap
import os
import stat
import uuid

from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common import mounts
from nova_disk_tuning.common.files import remove_if_exists
from nova_disk_tuning.storage import blockdev
from nova_disk_tuning.storage.fallocate import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    errname,
    fallocate,
)

LOG = logging.getLogger(__name__)

PROBE_PREFIX = ".ndt-probe-"
# The O_DIRECT probe writes one block aligned for any device (Nova's probe
# does the same): 4096 covers 512e and 4Kn disks.
DIRECT_IO_BLOCK = 4096
MODES = ("zero_range", "punch_hole", "allocate")
# Block devices implement fallocate ZERO_RANGE (kernel fallback to writing
# zeroes, Linux >= 4.9) and PUNCH_HOLE|KEEP_SIZE (WRITE ZEROES with unmap,
# no fallback: needs write_zeroes_max_bytes > 0); mode 0 never.
_BLOCK_QUEUE = "/sys/dev/block/{major}:{minor}/queue/write_zeroes_max_bytes"
_BLOCK_SYSFS = "/sys/dev/block/{major}:{minor}"

# Storage kinds the tuning policy knows (its io_uring denylist): the file
# systems whose type names one, and, for block devices, device-mapper LVM
# volumes and kernel RBD (krbd) devices.
FS_STORAGE_KINDS = {
    "cifs": "cifs",
    "smb3": "cifs",
    "nfs": "nfs",
    "nfs4": "nfs",
    "fuse.quobyte": "quobyte",
}


@dataclasses.dataclass(frozen=True)
class Allocation:
    size: int  # apparent size (st_size), or the device size
    allocated: int  # st_blocks * 512; the device size for block devices
    fully_allocated: bool

    @property
    def ratio(self) -> float:
        return self.allocated / self.size if self.size else 1.0


def covers(allocated: int, size: int) -> bool:
    """Whether ``allocated`` host bytes cover a disk of ``size`` (raw or virtual).

    The rule KubeVirt and the design use for "writes will not allocate".
    st_blocks also counts indirect blocks (ext2), which can only make a file
    look *more* allocated by a few blocks per MiB, never hide a large hole.
    """
    return allocated >= size


def storage_key(st: os.stat_result) -> tuple[str, int]:
    """The cache key of the storage behind a stat result."""
    if stat.S_ISBLK(st.st_mode):
        return ("blk", st.st_rdev)
    return ("fs", st.st_dev)


class StorageProbe:
    def __init__(self) -> None:
        self._direct_io: dict[tuple[str, int], bool] = {}
        self._modes: dict[tuple[str, int], frozenset[str]] = {}
        self._fs_type: dict[tuple[str, int], str] = {}
        self._kind: dict[tuple[str, int], str | None] = {}

    # Simple facts -----------------------------------------------------

    def is_block_device(self, path: str) -> bool:
        return blockdev.is_block_device(path)

    def source_type(self, path: str) -> str:
        """``file`` or ``block``: what the disk at ``path`` is to libvirt (symlinks followed).

        A missing path is :class:`~nova_disk_tuning.exception.DiskNotFound`;
        anything else (a directory, a FIFO, a character device) is refused
        before anything opens it.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise exception.DiskNotFound(
                disk=path, reason="no such file or device; check the path"
            ) from None
        if stat.S_ISBLK(st.st_mode):
            return "block"
        if stat.S_ISREG(st.st_mode):
            return "file"
        raise exception.InvalidDiskConfig(
            disk=path, reason="neither a regular file nor a block device"
        )

    def allocation(self, path: str) -> Allocation:
        """The allocation state now (never cached: guests and zeroing change it)."""
        st = _stat(path, "allocation")
        if stat.S_ISBLK(st.st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = blockdev.device_size(fd)
            finally:
                os.close(fd)
            return Allocation(size, size, True)
        allocated = st.st_blocks * 512
        return Allocation(st.st_size, allocated, covers(allocated, st.st_size))

    def fs_type(self, path: str) -> str:
        """File-system type from /proc/self/mountinfo ("block" for a device)."""
        st = _stat(path, "fs_type")
        key = storage_key(st)
        if key in self._fs_type:
            return self._fs_type[key]
        blk = key[0] == "blk"
        kind = "block" if blk else mounts.fs_type(path, st.st_dev)
        self._fs_type[key] = kind
        return kind

    def storage_kind(self, path: str) -> str | None:
        """What the storage under ``path`` is, where the policy cares.

        ``lvm`` or ``krbd`` for such a block device, ``cifs``, ``nfs`` or
        ``quobyte`` for a file on such a file system, else None. The one
        place that decides it: image backends, volume drivers and
        ``explain`` all ask here, so they cannot disagree.
        """
        st = _stat(path, "storage_kind")
        key = storage_key(st)
        if key not in self._kind:
            if key[0] == "blk":
                self._kind[key] = block_storage_kind(st.st_rdev)
            else:
                self._kind[key] = FS_STORAGE_KINDS.get(self.fs_type(path))
        return self._kind[key]

    # O_DIRECT -----------------------------------------------------------

    def supports_direct_io(self, path: str) -> bool:
        """Whether O_DIRECT I/O works at path (a directory, a file or a device).

        A file or a block device that exists is asked by reading its first
        block with O_DIRECT: nothing is written, so a disk that ``audit`` or
        ``explain`` only reads, a convert's source, or a read-only mount
        leaves no probe file behind. A directory (where a disk is about to be
        made) is asked by an aligned O_DIRECT write to a uniquely named file
        in it, always removed. EINVAL (and ENOENT: the directory is missing)
        mean no.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            LOG.warning("O_DIRECT probe: %s does not exist, reporting no O_DIRECT", path)
            return False
        key = storage_key(st)
        if key not in self._direct_io:
            if key[0] == "blk":
                result = _direct_read(path, device=True)
            elif stat.S_ISREG(st.st_mode):
                result = _direct_read(path, device=False)
            else:
                result = _direct_write_probe(_directory(path, st))
            LOG.info("O_DIRECT %s at %s", "works" if result else "does not work", path)
            self._direct_io[key] = result
        return self._direct_io[key]

    # fallocate modes ----------------------------------------------------

    def fallocate_modes(self, path: str) -> frozenset[str]:
        """The subset of {"zero_range", "punch_hole", "allocate"} the storage implements."""
        st = _stat(path, "fallocate_modes")
        key = storage_key(st)
        if key not in self._modes:
            if key[0] == "blk":
                # Probing a device by fallocate would destroy data: ask sysfs.
                limit = _BLOCK_QUEUE.format(major=os.major(st.st_rdev), minor=os.minor(st.st_rdev))
                modes = {"zero_range"}
                if _read_int(limit) > 0:
                    modes.add("punch_hole")
                result = frozenset(modes)
            else:
                result = _fallocate_probe(_directory(path, st))
            LOG.info("fallocate modes at %s: %s", path, ", ".join(sorted(result)) or "none")
            self._modes[key] = result
        return self._modes[key]


def _stat(path: str, operation: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise exception.StorageError(
            operation=operation, path=path, reason="no such file or directory; check the path"
        ) from None


def _directory(path: str, st: os.stat_result) -> str:
    return path if stat.S_ISDIR(st.st_mode) else os.path.dirname(os.path.abspath(path))


def _read_int(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def _aligned_buffer(size: int) -> mmap.mmap:
    # Anonymous mmap memory is page aligned and zero filled: what O_DIRECT
    # needs, without posix_memalign through ctypes.
    return mmap.mmap(-1, size)


def _direct_write_probe(directory: str) -> bool:
    name = os.path.join(directory, f"{PROBE_PREFIX}directio-{uuid.uuid4().hex}")
    buf = _aligned_buffer(DIRECT_IO_BLOCK)
    fd = -1
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT | os.O_CLOEXEC)
        os.write(fd, buf)
        return True
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):
            return False
        raise _probe_error("O_DIRECT probe", directory, exc) from exc
    finally:
        if fd >= 0:
            os.close(fd)
        buf.close()
        remove_if_exists(name)


def _direct_read(path: str, device: bool) -> bool:
    """Read the first block of an existing file or device with O_DIRECT; False on EINVAL.

    A device is read in its logical block size; a file in DIRECT_IO_BLOCK
    (an empty file reads nothing, which still proves the open). Files are
    opened O_NONBLOCK: a FIFO put in the file's place cannot block the probe.
    """
    flags = os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC | (0 if device else os.O_NONBLOCK)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise _probe_error("O_DIRECT probe", path, exc) from exc
    try:
        size = blockdev.logical_block_size(fd) if device else DIRECT_IO_BLOCK
        buf = _aligned_buffer(max(size, mmap.PAGESIZE))
        try:
            os.preadv(fd, [memoryview(buf)[:size]], 0)
        finally:
            buf.close()
        return True
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise _probe_error("O_DIRECT probe", path, exc) from exc
    finally:
        os.close(fd)


def _fallocate_probe(directory: str) -> frozenset[str]:
    name = os.path.join(directory, f"{PROBE_PREFIX}falloc-{uuid.uuid4().hex}")
    supported = set()
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _probe_error("fallocate probe", directory, exc) from exc
    try:
        # Real data first: some file systems return early (success) when
        # asked to punch or zero beyond EOF, which would prove nothing.
        try:
            os.pwrite(fd, b"\xff" * 8192, 0)
        except OSError as exc:  # ENOSPC on a full file system, EDQUOT
            raise _probe_error("fallocate probe", directory, exc) from exc
        trials = (
            ("zero_range", FALLOC_FL_ZERO_RANGE, 0, 4096),
            ("punch_hole", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096),
            ("allocate", 0, 8192, 8192),
        )
        for mode_name, mode, offset, length in trials:
            try:
                fallocate(fd, mode, offset, length)
                supported.add(mode_name)
            except OSError as exc:
                if exc.errno != errno.EOPNOTSUPP:
                    raise _probe_error(f"fallocate probe ({mode_name})", directory, exc) from exc
    finally:
        os.close(fd)
        remove_if_exists(name)
    return frozenset(supported)


def _probe_error(operation: str, path: str, exc: OSError) -> exception.StorageError:
    code = errname(exc.errno)
    return exception.StorageError(
        operation=operation,
        path=path,
        reason=f"{exc.strerror} ({code}); check that it is writable and has free space",
    )


def block_storage_kind(rdev: int) -> str | None:
    """``lvm`` for a device-mapper LVM volume, ``krbd`` for a kernel RBD device."""
    sysfs = _BLOCK_SYSFS.format(major=os.major(rdev), minor=os.minor(rdev))
    try:
        with open(f"{sysfs}/dm/uuid") as handle:
            # LVM names its device-mapper targets "LVM-<vg uuid><lv uuid>".
            if handle.read().startswith("LVM-"):
                return "lvm"
    except FileNotFoundError:
        pass  # not a device-mapper device
    if os.path.basename(os.path.realpath(sysfs)).startswith("rbd"):
        return "krbd"
    return None
