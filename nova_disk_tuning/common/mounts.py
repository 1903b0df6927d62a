"""Which mount holds a path, from /proc/self/mountinfo."""

from __future__ import annotations

import os

MOUNTINFO = "/proc/self/mountinfo"


def fs_type(path: str, dev: int | None = None) -> str:
    """The file-system type of the mount holding ``path`` ("unknown" if none matches).

    The mount whose device number is ``dev`` wins (bind mounts and overlays
    share mount points); otherwise the longest mount point that contains the
    path's real path, and of mounts stacked on one point the last (the one
    that is visible).
    """
    realpath = os.path.realpath(path)
    wanted = f"{os.major(dev)}:{os.minor(dev)}" if dev is not None else None
    best, best_len = "unknown", -1
    try:
        with open(MOUNTINFO, encoding="utf-8") as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                fields = left.split()
                kind = right.split()[0] if right else "unknown"
                if wanted is not None and fields[2] == wanted:
                    return kind
                # Mount points escape spaces as \040.
                point = fields[4].replace("\\040", " ")
                inside = realpath == point or realpath.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= best_len:
                    best, best_len = kind, len(point)
    except FileNotFoundError:
        pass  # no /proc: nothing is known
    return best
