"""Which mount holds a path, from /proc/self/mountinfo."""

from __future__ import annotations

import os
import re

MOUNTINFO = "/proc/self/mountinfo"
# The kernel writes space, tab, newline and backslash in mount points as octal.
_ESCAPE = re.compile(rb"\\([0-7]{3})")


def fs_type(path: str, dev: int | None = None, mountinfo: str = MOUNTINFO) -> str:
    """The file-system type of the mount holding ``path`` ("unknown" if none matches).

    The mount whose device number is ``dev`` wins (bind mounts and overlays
    share mount points); otherwise the longest mount point that contains the
    path's real path, and of mounts stacked on one point the last (the one
    that is visible). The table is read as bytes: a mount point anywhere on
    the host may be in any encoding (a Latin-1 name), and paths are compared
    as the kernel has them.
    """
    realpath = os.fsencode(os.path.realpath(path))
    wanted = f"{os.major(dev)}:{os.minor(dev)}".encode() if dev is not None else None
    best, best_len = "unknown", -1
    try:
        with open(mountinfo, "rb") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return best  # no /proc: nothing is known
    for line in lines:
        left, _, right = line.partition(b" - ")
        fields = left.split()
        if len(fields) < 5:
            continue
        kind = os.fsdecode(right.split()[0]) if right.split() else "unknown"
        if wanted is not None and fields[2] == wanted:
            return kind
        point = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])
        inside = realpath == point or realpath.startswith(point.rstrip(b"/") + b"/")
        if inside and len(point) >= best_len:
            best, best_len = kind, len(point)
    return best
