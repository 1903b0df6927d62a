"""Byte units (powers of 1024), and sizes as people read and write them."""

from __future__ import annotations

import re

from nova_disk_tuning import exception

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_UNITS = {"": 1, "B": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB}
_SIZE = re.compile(r"\s*([0-9]+)\s*([KMGT]?)(i?B)?\s*", re.IGNORECASE)  # ASCII digits only


def parse_size(text: str, what: str = "size") -> int:
    """``10G``, ``512M``, ``4096`` or ``1GiB`` in bytes (powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise exception.InvalidConfig(
            reason=f"{what} {text!r} is not a size; use bytes or a number "
            "with K, M, G or T (powers of 1024), e.g. 10G or 512M."
        )
    number, unit = match.group(1), (match.group(2) or "").upper()
    return int(number) * _UNITS[unit]


def human_size(value: int) -> str:
    """``1.5 GiB``: the largest unit not above ``value``, one decimal; bytes as ``512 B``.

    For reading (reasons, tables, logs): :func:`parse_size` does not take it back.
    """
    for unit in ("T", "G", "M", "K"):
        if value >= _UNITS[unit]:
            return f"{value / _UNITS[unit]:.1f} {unit}iB"
    return f"{value} B"


def compact_size(value: int, lower: bool = False) -> str:
    """``10G``, ``512M``, ``4K``: the largest unit that divides ``value`` exactly.

    For tools' arguments and labels (fio's ``bs=4k`` with ``lower``); what
    no unit divides stays a number of bytes. :func:`parse_size` takes it back.
    """
    for unit in ("T", "G", "M", "K"):
        if value and value % _UNITS[unit] == 0:
            return f"{value // _UNITS[unit]}{unit.lower() if lower else unit}"
    return str(value)
