"""Patterns written before zeroing, and checks that read them back."""

from __future__ import annotations

import os

# Never zero, so a stray zero shows up; 251 is prime so blocks differ.
PATTERN = bytes((i % 251) + 1 for i in range(1 << 20))


def fill(path: str, size: int) -> None:
    """Write the pattern over [0, size) and flush it to the storage."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        done = 0
        while done < size:
            n = min(len(PATTERN), size - done)
            os.pwrite(fd, PATTERN[:n], done)
            done += n
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def expected_pattern(offset: int, length: int) -> bytes:
    out = bytearray()
    while length:
        start = offset % len(PATTERN)
        n = min(length, len(PATTERN) - start)
        out += PATTERN[start : start + n]
        offset += n
        length -= n
    return bytes(out)


def assert_zeroed(path: str, offset: int, length: int, total: int) -> None:
    """The range reads back as zeroes; everything else still has the pattern."""
    assert_only_zeroed(path, [(offset, length)], total)


def assert_only_zeroed(path: str, ranges: list[tuple[int, int]], total: int) -> None:
    """Sorted, disjoint ranges read back as zeroes; the rest still has the pattern."""
    pos = 0
    for offset, length in [*ranges, (total, 0)]:
        assert read(path, pos, offset - pos) == expected_pattern(pos, offset - pos), (
            f"bytes in [{pos}, {offset}) outside the zeroed ranges changed"
        )
        data = read(path, offset, length)
        assert len(data) == length
        assert data.count(0) == length, f"non-zero bytes in [{offset}, {offset + length})"
        pos = offset + length


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512
