"""Versions of libvirt, QEMU and qemu-img, and the first releases each feature needs.

The gates are written once, here, and every text that names one (the
policy's reasons, the options' help, qemu-img's fallbacks) renders it from
these constants (reference.md and the projects' release notes are where
they come from).
"""

from __future__ import annotations

Version = tuple[int, int, int]

# libvirt <driver io='io_uring'> (6.3.0), and QEMU's aio=io_uring (5.0).
IO_URING_LIBVIRT: Version = (6, 3, 0)
IO_URING_QEMU: Version = (5, 0, 0)
# libvirt <driver discard_no_unref='on'> (9.5.0).
DISCARD_NO_UNREF_LIBVIRT: Version = (9, 5, 0)
# Per-queue IOThread mapping: libvirt 10.0 with QEMU 9.0 (iothread-vq-mapping).
QUEUE_MAPPING_LIBVIRT: Version = (10, 0, 0)
QUEUE_MAPPING_QEMU: Version = (9, 0, 0)
# qcow2 extended_l2 (QEMU 5.2): preallocating an overlay needs it.
EXTENDED_L2_QEMU: Version = (5, 2, 0)
# qemu-img convert --target-is-zero: accepted since 5.0, honoured since 5.1.
TARGET_IS_ZERO_QEMU: Version = (5, 1, 0)


def version_from_int(number: int) -> Version:
    """libvirt's packed ``major * 1_000_000 + minor * 1_000 + micro``."""
    return (number // 1_000_000, number // 1_000 % 1_000, number % 1_000)


def at_least(version: Version | None, minimum: Version) -> bool:
    """True when ``version`` is known and not older than ``minimum``."""
    return version is not None and version >= minimum


def parse_version(text: str | None) -> Version | None:
    """The inverse of :func:`format_version` ("unknown" and None are None)."""
    if text in (None, "unknown"):
        return None
    parts = [int(p) for p in str(text).split(".")] + [0, 0, 0]
    return (parts[0], parts[1], parts[2])


def format_version(version: Version | None) -> str:
    """``9.0.0``, or ``unknown``."""
    return "unknown" if version is None else ".".join(str(part) for part in version)


def short_version(version: Version) -> str:
    """A release as its projects name it: ``6.3``, ``10.0``, ``9.5.1``."""
    major, minor, micro = version
    return f"{major}.{minor}" if micro == 0 else f"{major}.{minor}.{micro}"
