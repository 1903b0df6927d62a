"""Image layouts x cache/AIO modes: first writes and rewrites (seed 000, extended).

Every disk is made the way the plugin's image backends make it
(``QemuImg.create`` with ``preallocation`` none/space/performance), then
``qemu-img bench`` writes 4 KiB blocks at a 64 KiB stride into it, 32 in
flight: the first run on the fresh disk measures first writes (allocation:
file system extents, qcow2 clusters, copy-on-write from the base), a second
run on the same disk measures rewrites. Each figure is the wall time of the
``qemu-img bench`` process plus an fdatasync of the disk file afterwards, so
a page-cache mode (writeback) is charged for getting its data to disk like
the O_DIRECT modes are.

For each layout the baseline is what plain libvirt gives a disk without
``<driver cache io>``: QEMU's writeback cache with thread-pool AIO. The
chosen cell is what ``tuning.decide`` picks for that disk, from the facts
measured on the real file after it was made. ``fio`` on the raw files shows
what the file system underneath does with the same kind of writes.

What is measured is defined in :mod:`~nova_disk_tuning_bench.layout_matrix`
(its names are importable from here too), how in
:mod:`~nova_disk_tuning_bench.layout_measure`; this module runs the matrix.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning.common.units import human_size
from nova_disk_tuning_bench import layout_measure as measure
from nova_disk_tuning_bench.layout_matrix import (
    BLOCK,
    DEFAULTS,
    DEPTH,
    DIRECT_MODES,
    FIO,
    FIRST,
    FULL,
    LAYOUTS,
    QUICK,
    REWRITE,
    STRIDE,
    Cell,
    Layout,
    Sizes,
    bench_argv,
    fio_argv,
    variant,
)
from nova_disk_tuning_bench.model import Result
from nova_disk_tuning_bench.summary import Target

__all__ = [
    "BLOCK",
    "DEFAULTS",
    "DEPTH",
    "DIRECT_MODES",
    "FIO",
    "FIRST",
    "FULL",
    "LAYOUTS",
    "QUICK",
    "REWRITE",
    "STRIDE",
    "TARGETS",
    "Cell",
    "Layout",
    "Sizes",
    "bench_argv",
    "fio_argv",
    "run",
    "variant",
]

LOG = logging.getLogger(__name__)

TARGETS = (
    Target(
        experiment=FIRST,
        variant=variant("qcow2-overlay-performance", Cell("none", "native")),
        against=variant("qcow2-overlay-space", Cell("none", "native")),
        at_least=4.0,
        what="preallocate_images=performance vs space, first writes into a qcow2 overlay",
    ),
    Target(
        experiment=FIRST,
        against=variant("raw-prealloc", DEFAULTS),
        at_least=2.0,
        what="tuned vs libvirt defaults, preallocated raw, first writes",
    ),
    Target(
        experiment=REWRITE,
        against=variant("raw-prealloc", DEFAULTS),
        at_least=2.0,
        what="tuned vs libvirt defaults, preallocated raw, rewrites",
    ),
)

Timings = dict[tuple[str, str, Cell], list[float]]


def _usable_cells(workdir: str) -> list[Cell]:
    """The libvirt defaults, and each O_DIRECT mode qemu-img can use here."""
    cells = [DEFAULTS]
    for mode in DIRECT_MODES:
        cell = Cell("none", mode)
        problem = measure.bench_works(workdir, cell)
        if problem:
            LOG.warning(
                "%s not measured: qemu-img bench cannot use it here (%s)",
                cell.label,
                problem,
            )
        else:
            cells.append(cell)
    return cells


def _tuned_cells(
    conf: cfg.ConfigOpts, workdir: str, disks: measure.Disks, matrix: dict[str, list[Cell]]
) -> dict[str, Cell]:
    """The policy's pick per layout (none without libvirt), added to ``matrix`` if missing."""
    caps = measure.host_caps(conf)
    tuned: dict[str, Cell] = {}
    if caps is None:
        return tuned
    for layout in LAYOUTS:
        # Decide on a disk made exactly as the measured ones are.
        path = os.path.join(workdir, f"{layout.name}.{layout.format}")
        disks.make(layout, path)
        try:
            tuned[layout.name] = pick = measure.tuned_cell(conf, layout, path, caps)
        finally:
            os.unlink(path)
        if pick not in matrix[layout.name]:
            # The policy picked a cell outside the matrix: measure it too.
            matrix[layout.name].append(pick)
    return tuned


def run(
    workdir: str,
    quick: bool = False,
    repeat: int = 3,
    conf: cfg.ConfigOpts | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[Result]:
    """Measure every layout x cell, ``repeat`` times, interleaved; then fio on raw files."""
    if conf is None:
        from nova_disk_tuning import conf as ndt_conf

        conf = ndt_conf.new_conf()
    sizes = QUICK if quick else FULL
    report = progress or (lambda percent: None)
    os.makedirs(workdir, exist_ok=True)

    cells = _usable_cells(workdir)
    disks = measure.Disks(conf, workdir, sizes.disk)
    matrix: dict[str, list[Cell]] = {layout.name: list(cells) for layout in LAYOUTS}
    tuned = _tuned_cells(conf, workdir, disks, matrix)
    timings: Timings = {}
    fio_engines = [e for e in ("libaio", "io_uring") if measure.fio_works(workdir, e)]
    fio_layouts = [layout for layout in LAYOUTS if layout.format == "raw"]
    cells_per_rep = sum(len(row) for row in matrix.values())
    steps = repeat * (cells_per_rep + len(fio_layouts) * len(fio_engines))
    done = 0

    remover = measure.Remover()
    try:
        for rep in range(repeat):
            for layout in LAYOUTS:
                row = matrix[layout.name]
                # Rotate the order each repetition: no cell always runs first.
                shift = rep % len(row)
                for cell in row[shift:] + row[:shift]:
                    path = os.path.join(workdir, f"{layout.name}.{layout.format}")
                    disks.make(layout, path)
                    try:
                        first = measure.timed_bench(path, layout.format, cell, sizes.count)
                        again = measure.timed_bench(path, layout.format, cell, sizes.count)
                    finally:
                        remover.remove(path)
                    timings.setdefault((FIRST, layout.name, cell), []).append(first)
                    timings.setdefault((REWRITE, layout.name, cell), []).append(again)
                    done += 1
                    report(100.0 * done / steps)
            for layout in fio_layouts:
                for engine in fio_engines:
                    path = os.path.join(workdir, f"fio-{layout.name}.raw")
                    disks.make(layout, path)
                    try:
                        iops = measure.fio_iops(path, engine, sizes)
                    finally:
                        remover.remove(path)
                    timings.setdefault((FIO, layout.name, Cell("none", engine)), []).append(iops)
                    done += 1
                    report(100.0 * done / steps)
    finally:
        remover.close()
        os.unlink(disks.base)
    return _results(timings, tuned, sizes)


def _results(timings: Timings, tuned: dict[str, Cell], sizes: Sizes) -> list[Result]:
    span = sizes.count * STRIDE
    phase = {
        FIRST: "first run on a fresh disk",
        REWRITE: "second run on the same disk",
    }
    results = []
    for (experiment, layout_name, cell), values in timings.items():
        layout = next(lay for lay in LAYOUTS if lay.name == layout_name)
        if experiment == FIO:
            engine = cell.io
            results.append(
                Result(
                    experiment=FIO,
                    variant=f"{layout_name} {engine}",
                    how=" ".join(fio_argv(f"{layout_name}.raw", engine, sizes))
                    + f"  (fresh {layout_name} file each run; write IOPS)",
                    seconds=values,
                    baseline=None if (layout_name, engine) == ("raw-sparse", "libaio")
                    else "raw-sparse libaio",
                    nbytes=sizes.fio_io,
                    unit="iops",
                )
            )  # fmt: skip
            continue
        base = variant(layout_name, DEFAULTS)
        how = " ".join(bench_argv(f"DISK.{layout.format}", layout.format, cell, sizes.count))
        made = f"preallocation={layout.preallocation}"
        if layout.overlay:
            made += f", overlay of a sparse raw base of {human_size(sizes.disk)}"
        how += (
            f"  ({phase[experiment]}; DISK: {layout_name}, {human_size(sizes.disk)}, "
            f"QemuImg.create {made}; {human_size(span)} span; wall time + fdatasync)"
        )
        this = variant(layout_name, cell)
        results.append(
            Result(
                experiment=experiment,
                variant=this,
                how=how,
                seconds=values,
                baseline=None if this == base else base,
                nbytes=sizes.count * BLOCK,
                chosen=tuned.get(layout_name) == cell,
            )
        )
    order = {name: i for i, name in enumerate((FIRST, REWRITE, FIO))}
    results.sort(key=lambda r: order[r.experiment])
    return results
