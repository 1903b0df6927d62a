"""Storage primitives benchmarked: fast zero and preallocation against writing zeroes.

Each experiment runs its variants side by side, interleaving repetitions,
on the storage under ``workdir``:

(a) zero an allocated file: Zeroer (the ovirt-imageio chain) vs
    ``dd if=/dev/zero oflag=direct bs=8M conv=fsync`` over the same range;
(b) the same on a loop block device backed by a file in workdir (root only);
(c) preallocate a disk (``preallocate_images = space``) vs writing it full
    of zeroes with dd, and vs Nova's ``fallocate -n``.

The harness runs this module as the ``storage`` experiment.

Run: ``python -m nova_disk_tuning_bench.primitives WORKDIR [--quick] [--repeat N]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping

from oslo_log import log as logging

from nova_disk_tuning.common.files import remove_if_exists
from nova_disk_tuning.common.units import GiB, MiB, compact_size, human_size
from nova_disk_tuning.storage.preallocate import preallocate
from nova_disk_tuning.storage.probe import StorageProbe
from nova_disk_tuning.storage.zero import Zeroer
from nova_disk_tuning_bench import standalone
from nova_disk_tuning_bench.model import Result, ratio

LOG = logging.getLogger(__name__)

DD_BS = 8 * MiB


def run(workdir: str, quick: bool = False, repeat: int = 3) -> list[Result]:
    """Run every storage experiment in workdir; return one Result per variant."""
    zero_size = 256 * MiB if quick else 4 * GiB
    prealloc_size = 1 * GiB if quick else 20 * GiB
    os.makedirs(workdir, exist_ok=True)
    check_space(workdir, prealloc_size + zero_size)
    fs = StorageProbe().fs_type(workdir)
    results = zero_file(workdir, fs, zero_size, repeat)
    if os.geteuid() == 0:
        results += zero_block_device(workdir, zero_size, repeat)
    else:
        LOG.warning("Not root: skipping the loop block-device experiment")
    results += preallocation(workdir, fs, prealloc_size, repeat, dd_once=not quick)
    return results


# (a) ---------------------------------------------------------------------------


def zero_file(workdir: str, fs: str, size: int, repeat: int) -> list[Result]:
    path = os.path.join(workdir, "bench-zero.raw")
    try:
        # Setup, untimed: a fully written file, flushed, so no dirty page
        # cache is left for the first timed variant to pay for.
        _dd(path, size, extra=("oflag=direct", "conv=fsync"))
        return _zero_experiment(f"storage/zero-file-{fs}-{compact_size(size)}", path, size, repeat)
    finally:
        remove_if_exists(path)


# (b) ---------------------------------------------------------------------------


def zero_block_device(workdir: str, size: int, repeat: int) -> list[Result]:
    backing = os.path.join(workdir, "bench-zero-loop.img")
    dev = None
    try:
        with open(backing, "wb") as f:
            f.truncate(size)
        # direct-io=on: the loop device writes its backing file with
        # O_DIRECT, as a real disk would not cache twice.
        dev = subprocess.run(
            ["losetup", "--find", "--show", "--direct-io=on", backing],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        _dd(dev, size, extra=("oflag=direct",))  # setup: allocate the backing file
        return _zero_experiment(
            f"storage/zero-blockdev-loop-{compact_size(size)}", dev, size, repeat
        )
    finally:
        if dev:
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        remove_if_exists(backing)


def _zero_experiment(name: str, path: str, size: int, repeat: int) -> list[Result]:
    methods: set[str] = set()

    def ours() -> None:
        # A fresh Zeroer each time: the timing includes finding the method.
        methods.add(Zeroer().zero(path, 0, size).method)

    variants = {
        "ours": ours,
        "dd": lambda: _dd(path, size, extra=("oflag=direct", "conv=fsync,notrunc")),
    }
    seconds = interleave(variants, repeat)
    return [
        Result(
            name,
            "ours",
            f"Zeroer().zero({path!r}, 0, {size}) -> {'/'.join(sorted(methods))}, with fsync",
            seconds["ours"],
            baseline="dd",
            nbytes=size,
            chosen=True,
        ),
        Result(
            name,
            "dd",
            f"dd if=/dev/zero of={path} bs=8M count={size // DD_BS} "
            "oflag=direct conv=fsync,notrunc",
            seconds["dd"],
            nbytes=size,
        ),
    ]


# (c) ---------------------------------------------------------------------------


def preallocation(workdir: str, fs: str, size: int, repeat: int, dd_once: bool) -> list[Result]:
    path = os.path.join(workdir, "bench-prealloc.raw")
    name = f"storage/preallocate-{fs}-{compact_size(size)}"
    runs = {"dd": 0}

    def ours() -> None:
        preallocate(path, size)

    def nova() -> None:
        # Nova: qemu-img creates the file, then `fallocate -n -l SIZE`.
        subprocess.run(["truncate", "-s", str(size), path], check=True)
        subprocess.run(["fallocate", "-n", "-l", str(size), path], check=True)

    def dd() -> bool:
        if dd_once and runs["dd"]:
            return False
        runs["dd"] += 1
        _dd(path, size, extra=("oflag=direct", "conv=fsync"))
        return True

    variants = {"ours": ours, "nova": nova, "dd": dd}
    try:
        seconds = interleave(variants, repeat, cleanup=lambda: remove_and_sync(path))
    finally:
        remove_if_exists(path)
    once = " (measured once: writing it takes minutes)" if dd_once else ""
    return [
        Result(name, "ours", f"preallocate({path!r}, {size})", seconds["ours"], "dd", size, True),
        Result(
            name,
            "nova",
            f"truncate -s {size} + fallocate -n -l {size} {path}",
            seconds["nova"],
            "dd",
            size,
        ),
        Result(
            name,
            "dd",
            f"dd if=/dev/zero of={path} bs=8M count={size // DD_BS} oflag=direct conv=fsync{once}",
            seconds["dd"],
            nbytes=size,
        ),
    ]


# Helpers, also of the resize experiment ------------------------------------------


def interleave(
    variants: Mapping[str, Callable[[], bool | None]],
    repeat: int,
    cleanup: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Run rep 1 of every variant, then rep 2, ...: noise hits them alike.

    A variant that returns False did not run this time (measured once).
    """
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(repeat):
        for name, fn in variants.items():
            start = time.monotonic()
            ran = fn()
            elapsed = time.monotonic() - start
            if ran is not False:
                seconds[name].append(elapsed)
                LOG.info("rep %d %s: %.4f s", rep + 1, name, elapsed)
            if cleanup:
                cleanup()
    return seconds


def _dd(path: str, size: int, extra: tuple[str, ...]) -> None:
    argv = ["dd", "if=/dev/zero", f"of={path}", f"bs={DD_BS}", f"count={size // DD_BS}", *extra]
    proc = subprocess.run([*argv, "status=none"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def check_space(workdir: str, needed: int) -> None:
    st = os.statvfs(workdir)
    free = st.f_bavail * st.f_frsize
    if free < needed + GiB:
        raise RuntimeError(
            f"{workdir} has {human_size(free)} free; the storage benchmarks need "
            f"{human_size(needed + GiB)}. Use another WORKDIR or --quick."
        )


def remove_and_sync(path: str) -> None:
    # Freeing 20 GiB of extents is journal work that would otherwise land
    # on whichever variant runs next (measured: fallocate 0.15-0.47 s).
    remove_if_exists(path)
    os.sync()


def format_results(results: list[Result]) -> str:
    by_key = {(r.experiment, r.variant): r for r in results}
    lines = [f"{'experiment':36} {'variant':6} {'median s':>10} {'spread':>7} {'x vs base':>10}"]
    for r in results:
        base = by_key.get((r.experiment, r.baseline)) if r.baseline else None
        times = f"{ratio(r, base):10.1f}" if base else f"{'-':>10}"
        line = f"{r.experiment:36} {r.variant:6} {r.median:10.4f} {r.spread:7.2f} {times}"
        lines.append(f"{line}   n={len(r.seconds)}  {r.how}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(standalone.main(__doc__, run, format_results))
