"""Checks on an image input before anything reads it.

An operator (or a caller of the API) can name any path as an image. Reading
the wrong kind of file goes wrong before any format check can help: a FIFO
with no writer blocks the reader forever, /dev/zero never ends and reads as a
valid all-zero raw disk, a directory raises IsADirectoryError. An empty file
or a qcow2/VMDK whose header points past the end of the file (an interrupted
download or copy) becomes an empty or all-zero root disk, because qemu reads
what is missing as zeroes.

So every image input is opened here first, and only here: the path is
stat()ed, opened non-blocking, the descriptor fstat()ed, and the file must be
a non-empty regular file or block device whose qcow2/VMDK header fits inside
it. Callers read the image through the descriptor this module checked, never
by opening the path again, so the path cannot be swapped in between.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import struct
from collections.abc import Iterator
from typing import NamedTuple

from nova_disk_tuning import exception
from nova_disk_tuning.common.files import kind_of
from nova_disk_tuning.storage import blockdev

# O_NONBLOCK: opening a FIFO for reading blocks until a writer appears
# (fifo(7)); non-blocking, the open returns at once and fstat says what it is.
# It has no effect on reads of regular files and block devices (open(2)),
# the only kinds read afterwards. O_NOCTTY: a terminal opened by a process
# without one would become its controlling terminal. O_CLOEXEC: qemu-img and
# other children must not inherit it.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY

_AGAIN = "copy or download the complete image again"

# qcow2 header (docs/interop/qcow2.txt in QEMU), big-endian. Version 2 ends
# after snapshots_offset (72 bytes); version 3 adds fields up to
# header_length at byte 100, and requires header_length >= 104.
QCOW2_MAGIC = b"QFI\xfb"  # the first four bytes of every qcow2 file
_QCOW2 = struct.Struct(">4sIQIIQIIQQIIQ")  # the version 2 header: _Qcow2Header
_QCOW2_V3_MIN = 104
_QCOW2_HEADER_LENGTH = struct.Struct(">I")  # at byte 100, version 3 only
# qemu refuses cluster_bits outside 9..21 (block/qcow2.h MIN/MAX_CLUSTER_BITS);
# checking first also keeps "clusters << cluster_bits" a small number.
_QCOW2_CLUSTER_BITS = range(9, 22)

# VMDK hosted sparse extent header (VMware's "Virtual Disk Format 5.0"),
# little-endian, one 512-byte sector; offsets and sizes count sectors.
_VMDK_MAGIC = b"KDMV"
_VMDK = struct.Struct("<4sIIQQQQIQQQ")  # _VmdkHeader
_SECTOR = 512
_VMDK_FLAG_RGD = 2  # the redundant grain directory is valid
# gdOffset of a streamOptimized file whose grain directory is in a footer:
# the footer is the second-last sector, before the end-of-stream marker.
_VMDK_GD_AT_END = 0xFFFFFFFFFFFFFFFF
_VMDK_FOOTER_FROM_END = 2 * _SECTOR


@dataclasses.dataclass(frozen=True)
class Source:
    path: str
    kind: str  # "regular file" or "block device"
    size: int  # bytes: st_size, or the device size for a block device
    mode: int = 0o644  # its permission bits (what a copy or conversion may keep at most)

    @property
    def copy_mode(self) -> int:
        """Permission bits for a copy or conversion of it: never wider than its own.

        Never executable and never group- or world-writable either (as
        qemu-img makes images): a 0600 image stays 0600, a 0666 one is 0644.
        """
        return self.mode & 0o644


class _Qcow2Header(NamedTuple):
    magic: bytes
    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int  # entries of 8 bytes
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int


class _VmdkHeader(NamedTuple):
    magic: bytes
    version: int
    flags: int
    capacity: int
    grain_size: int
    descriptor_offset: int
    descriptor_size: int
    gtes_per_gt: int  # entries of 4 bytes per grain table
    rgd_offset: int
    gd_offset: int
    overhead: int  # sectors before the first grain: header to grain tables


@dataclasses.dataclass(frozen=True)
class _Region:
    name: str
    offset: int
    length: int


def reader_name(fd: int) -> str:
    """A name another process opens to read the very file open here as ``fd``.

    ``/proc/<pid>/fd/<n>`` reopens the file the descriptor holds, whatever
    the path names by then: qemu-img reads what was checked, not a file
    swapped in after the check. It is also plain ASCII, whatever the
    original name's encoding.
    """
    return f"/proc/{os.getpid()}/fd/{fd}"


def check_source(path: str) -> Source:
    """Return what the image input at ``path`` is, or raise why it is not one."""
    with open_source(path) as (_fd, source):
        return source


@contextlib.contextmanager
def open_source(path: str) -> Iterator[tuple[int, Source]]:
    """Open an image input for reading, checked; yield its descriptor and facts.

    Raises ImageNotFound, or ImageUnacceptable for anything but a non-empty,
    untruncated regular file or block device.
    """
    # Not opened at all when stat() already says no: opening some devices
    # acts (opening /dev/watchdog arms the watchdog; a tape rewinds on close).
    _refuse_kind(path, _stat(path).st_mode)
    fd = _open(path)
    try:
        # The authoritative check: the path may have changed since stat().
        mode = os.fstat(fd).st_mode
        _refuse_kind(path, mode)
        source = Source(path, _kind_name(mode), _size(fd, mode), stat.S_IMODE(mode))
        problem = _empty_problem(source) or _truncation_problem(fd, source)
        if problem:
            raise exception.ImageUnacceptable(path=path, reason=problem)
        yield fd, source
    finally:
        os.close(fd)


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise exception.ImageNotFound(path=path) from None


def _open(path: str) -> int:
    try:
        return os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise exception.ImageNotFound(path=path) from None
    except OSError as exc:
        # ENXIO: a socket (if swapped in after stat) or a device node whose
        # driver or medium is missing. Any other errno is not expected here.
        if exc.errno != errno.ENXIO:
            raise
        raise exception.ImageUnacceptable(
            path=path,
            reason="it cannot be opened (ENXIO: a socket, or a device without its driver "
            "or medium); give the image file",
        ) from None


def _refuse_kind(path: str, mode: int) -> None:
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return
    kind = kind_of(mode)
    real = os.path.realpath(path)
    through = f" ({real}, through a symbolic link)" if real != os.path.abspath(path) else ""
    raise exception.ImageUnacceptable(
        path=path,
        reason=f"it is {kind}{through}, not a regular file or block device; give the image file",
    )


def _kind_name(mode: int) -> str:
    return kind_of(mode).removeprefix("a ")


def _size(fd: int, mode: int) -> int:
    # st_size of a block device is 0; its size comes from BLKGETSIZE64.
    return blockdev.device_size(fd) if stat.S_ISBLK(mode) else os.fstat(fd).st_size


def _empty_problem(source: Source) -> str | None:
    if source.size:
        return None
    if source.kind == "block device":
        return (
            "it is an empty block device (0 bytes: no medium, or a loop device with "
            "no file attached); attach the image or give the image file"
        )
    return f"it is empty (0 bytes), as an interrupted download or copy leaves it; {_AGAIN}"


# -- truncated headers -----------------------------------------------------------


def _truncation_problem(fd: int, source: Source) -> str | None:
    """Why the qcow2 or VMDK on ``fd`` is truncated, or None (other formats: None).

    Decided by the magic bytes, not by the format inspector: a qcow2 cut
    shorter than its 512-byte header is not recognised by the inspector and
    would pass as a small raw image.
    """
    head = os.pread(fd, _SECTOR, 0)
    if head.startswith(QCOW2_MAGIC):
        regions = _qcow2_regions(head)
        fmt = "qcow2"
    elif head.startswith(_VMDK_MAGIC):
        regions = _vmdk_regions(fd, head, source.size)
        fmt = "VMDK"
    else:
        return None
    if isinstance(regions, str):
        return regions
    return _outside(fmt, regions, source)


def _qcow2_regions(head: bytes) -> list[_Region] | str:
    """Where the qcow2 header places its parts, or why the header is invalid."""
    if len(head) < _QCOW2.size:
        return [_Region("header", 0, _QCOW2.size)]
    header = _Qcow2Header._make(_QCOW2.unpack_from(head))
    if header.version not in (2, 3):
        return []  # qcow v1 or unknown: ImageSafety refuses the version
    if header.version == 3 and len(head) < _QCOW2_V3_MIN:
        return [_Region("header", 0, _QCOW2_V3_MIN)]
    whole = _Region("header", 0, _qcow2_header_length(head, header.version))
    if header.cluster_bits not in _QCOW2_CLUSTER_BITS:
        return (
            f"its qcow2 header is invalid: cluster_bits {header.cluster_bits} is outside "
            f"{_QCOW2_CLUSTER_BITS.start}..{_QCOW2_CLUSTER_BITS.stop - 1} (what qemu "
            f"accepts); {_AGAIN}"
        )
    refcount_length = header.refcount_table_clusters << header.cluster_bits
    return [
        whole,
        # An image of virtual size 0 has no L1 table (l1_size 0).
        _Region("L1 table", header.l1_table_offset, 8 * header.l1_size),
        _Region("refcount table", header.refcount_table_offset, refcount_length),
        # Only where the table starts: its entries have variable lengths.
        _Region("snapshot table", header.snapshots_offset, 1 if header.nb_snapshots else 0),
    ]


def _qcow2_header_length(head: bytes, version: int) -> int:
    if version == 2:
        return _QCOW2.size
    (length,) = _QCOW2_HEADER_LENGTH.unpack_from(head, _QCOW2_V3_MIN - 4)
    return max(int(length), _QCOW2_V3_MIN)


def _vmdk_regions(fd: int, head: bytes, size: int) -> list[_Region] | str:
    """Where the sparse VMDK header places its parts, or why it is unusable."""
    if len(head) < _SECTOR:
        return [_Region("header", 0, _SECTOR)]
    header = _VmdkHeader._make(_VMDK.unpack_from(head))
    if header.gd_offset == _VMDK_GD_AT_END:
        footer = _vmdk_footer(fd, size)
        if footer is None:
            return (
                "it is truncated: its VMDK header says the grain directory is in a "
                f"footer at the end, but its last bytes (of {size}) are no footer; {_AGAIN}"
            )
        header = footer
    sectors_per_gd_entry = header.grain_size * header.gtes_per_gt
    if not sectors_per_gd_entry:
        return (
            f"its VMDK header is invalid: grain size {header.grain_size} sectors and "
            f"{header.gtes_per_gt} entries per grain table (qemu refuses 0); {_AGAIN}"
        )
    gd_length = 4 * -(-header.capacity // sectors_per_gd_entry)  # 4 bytes per entry
    regions = [
        _Region("header", 0, _SECTOR),
        _Region(
            "descriptor",
            header.descriptor_offset * _SECTOR,
            header.descriptor_size * _SECTOR,
        ),
        _Region("grain directory", header.gd_offset * _SECTOR, gd_length),
        _Region("metadata (header to grain tables)", 0, header.overhead * _SECTOR),
    ]
    if header.flags & _VMDK_FLAG_RGD:
        regions.append(_Region("redundant grain directory", header.rgd_offset * _SECTOR, gd_length))
    return regions


def _vmdk_footer(fd: int, size: int) -> _VmdkHeader | None:
    if size < _SECTOR + _VMDK_FOOTER_FROM_END:
        return None
    footer = os.pread(fd, _SECTOR, size - _VMDK_FOOTER_FROM_END)
    if not footer.startswith(_VMDK_MAGIC) or len(footer) < _SECTOR:
        return None
    return _VmdkHeader._make(_VMDK.unpack_from(footer))


def _outside(fmt: str, regions: list[_Region], source: Source) -> str | None:
    """The region missing first from the image, said in one line.

    By where regions end: what a cut at some byte removes first.
    """
    size, holder = source.size, "the file" if source.kind == "regular file" else "the device"
    for region in sorted(regions, key=lambda region: region.offset + region.length):
        if not region.length or region.offset + region.length <= size:
            continue
        if region.name == "header":
            return (
                f"it is truncated: its {fmt} header is {region.length} bytes long but "
                f"{holder} has {size} bytes; {_AGAIN}"
            )
        return (
            f"it is truncated: its {fmt} header places the {region.name} at byte "
            f"{region.offset} ({region.length} bytes) but {holder} has {size} bytes; {_AGAIN}"
        )
    return None
