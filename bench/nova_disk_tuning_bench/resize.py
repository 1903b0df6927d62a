"""Benchmark: what a same-host resize copies, for each way a disk can be made.

Nova copies the disks of a resized instance on one host with ``cp -r``
(``nova.virt.libvirt.utils.copy_image``), and ``finish_migration`` then calls
each disk's ``cache()`` again, which is where preallocation happens. Each
variant is that copy plus that preallocation, timed until the copy is on
disk (fsync of the copy), from a source that is not in the page cache (the
guest ran with ``cache=none``), for a disk of which the guest wrote a tenth.
Two layouts, the two ways a disk is preallocated:

* ``raw``: a raw disk (``images_type = flat``) preallocated with fallocate;
* ``qcow2``: a ``performance`` qcow2 overlay (extended L2,
  ``preallocation=falloc``).

Variants:

* ``nova``: Nova's own driver with its default ``preallocate_images =
  none``: the same layout sparse, ``cp -r`` (the baseline);
* ``before``: the preallocated disk copied as Nova copies it, ``cp -r``;
* ``ours``: the preallocated disk copied by the command of
  ``nova_disk_tuning.storage.copy`` (its data extents) and preallocated again
  by ``nova_disk_tuning.storage.preallocate``, as the drop-in's resize does.

Run: ``python -m nova_disk_tuning_bench.resize WORKDIR [--quick] [--repeat N]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from oslo_log import log as logging

from nova_disk_tuning import conf as ndt_conf
from nova_disk_tuning.common.files import remove_if_exists
from nova_disk_tuning.common.units import GiB, MiB, compact_size
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.storage.copy import sparse_copy_argv
from nova_disk_tuning.storage.preallocate import preallocate
from nova_disk_tuning_bench import conversion, primitives, standalone
from nova_disk_tuning_bench.model import Result

LOG = logging.getLogger(__name__)
LAYOUTS = ("raw", "qcow2")


def run(workdir: str, quick: bool = False, repeat: int = 3) -> list[Result]:
    size = 1 * GiB if quick else 4 * GiB
    os.makedirs(workdir, exist_ok=True)
    primitives.check_space(workdir, 6 * size)
    results = []
    for layout in LAYOUTS:
        results += _layout(workdir, layout, size, repeat)
    return results


def _layout(workdir: str, layout: str, size: int, repeat: int) -> list[Result]:
    made = _make_disks(workdir, layout, size)
    sparse, preallocated, base = made["none"], made["preallocated"], made.get("base")
    dest = os.path.join(workdir, "disk.copy")

    def copy(argv: list[str], prealloc: bool = False) -> Callable[[], None]:
        def timed() -> None:
            subprocess.run(argv, check=True, capture_output=True)
            if prealloc:
                preallocate(dest, size, keep_size=layout == "qcow2")
            fd = os.open(dest, os.O_RDONLY)
            try:
                os.fsync(fd)  # the copy's own data, not whatever else is dirty
            finally:
                os.close(fd)

        return timed

    runs = {
        "nova": copy(["cp", "-r", sparse, dest]),
        "before": copy(["cp", "-r", preallocated, dest]),
        "ours": copy(sparse_copy_argv(preallocated, dest), prealloc=True),
    }

    def cleanup() -> None:
        # Untimed, after every variant: the next one starts from cold sources.
        primitives.remove_and_sync(dest)
        conversion.drop_caches([sparse, preallocated])

    try:
        cleanup()
        seconds = primitives.interleave(runs, repeat, cleanup=cleanup)
    finally:
        for path in (sparse, preallocated, base, dest):
            if path:
                remove_if_exists(path)
    name = f"resize/{layout}-{compact_size(size)}"
    what = f"{layout} disk of {compact_size(size)}, a tenth written, cold source"
    ours = " ".join(sparse_copy_argv("SRC", "DST"))
    return [
        Result(name, "nova", f"cp -r of the sparse {what}", seconds["nova"], nbytes=size),
        Result(
            name, "before", f"cp -r of the preallocated {what}", seconds["before"], "nova", size
        ),
        Result(name, "ours", f"{ours} + preallocate: {what}", seconds["ours"], "nova", size, True),
    ]


def _make_disks(workdir: str, layout: str, size: int) -> dict[str, str]:
    disks = {}
    if layout == "raw":
        for mode in ("none", "preallocated"):
            path = os.path.join(workdir, f"disk-{mode}.raw")
            remove_if_exists(path)
            if mode == "none":
                with open(path, "wb") as handle:
                    handle.truncate(size)
            else:
                preallocate(path, size)
            _write_tenth(path, "raw", size)
            disks[mode] = path
        return disks
    tool = QemuImg(ndt_conf.new_conf(overrides={"DEFAULT": {"instances_path": workdir}}))
    base = disks["base"] = os.path.join(workdir, "base.raw")
    with open(base, "wb") as handle:
        handle.truncate(64 * MiB)
    for mode, prealloc in (("none", "none"), ("preallocated", "performance")):
        path = os.path.join(workdir, f"disk-{mode}.qcow2")
        remove_if_exists(path)
        tool.create(path, "qcow2", size, backing=base, backing_format="raw", preallocation=prealloc)
        _write_tenth(path, "qcow2", size)
        disks[mode] = path
    return disks


def _write_tenth(path: str, fmt: str, size: int) -> None:
    # What the guest wrote: 1 MiB of data every 10 MiB, spread over the disk.
    commands = []
    for offset in range(0, size, 10 * MiB):
        commands += ["-c", f"write -P 0x5a {offset} 1M"]
    subprocess.run(["qemu-io", "-f", fmt, *commands, path], check=True, capture_output=True)


def format_results(results: list[Result]) -> str:
    return primitives.format_results(results)


if __name__ == "__main__":
    sys.exit(standalone.main(__doc__, run, format_results))
