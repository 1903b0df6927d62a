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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.bench.model import Result
from nova_disk_tuning.bench.report import Target

LOG = logging.getLogger(__name__)

GiB = 1 << 30
MiB = 1 << 20
BLOCK = 4096
STRIDE = 65536
DEPTH = 32


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    format: str
    preallocation: str  # preallocate_images value the backend is given
    overlay: bool  # a qcow2 overlay on the base image


LAYOUTS = (
    Layout("raw-prealloc", "raw", "space", False),
    Layout("raw-sparse", "raw", "none", False),
    Layout("qcow2-overlay", "qcow2", "none", True),
    Layout("qcow2-overlay-space", "qcow2", "space", True),
    Layout("qcow2-overlay-performance", "qcow2", "performance", True),
    Layout("qcow2-standalone", "qcow2", "none", False),
)


@dataclasses.dataclass(frozen=True)
class Cell:
    cache: str
    io: str

    @property
    def label(self) -> str:
        return f"{self.cache}+{self.io}"


# What libvirt/QEMU do when the domain XML says nothing.
DEFAULTS = Cell("writeback", "threads")
# native needs cache.direct=on, so it is only measured with cache none.
DIRECT_MODES = ("threads", "native", "io_uring")


@dataclasses.dataclass(frozen=True)
class Sizes:
    disk: int  # virtual size of every disk and of the base image
    count: int  # qemu-img bench requests per run (span = count * STRIDE)
    fio_io: int  # bytes fio writes per run
    fio_runtime: int  # seconds fio may take at most


# The spans are kept small because freeing the used disks is the slow part:
# the writes leave one extent per request in sparse files, and with ext4's
# ``discard`` mount option unlinking 16384 such extents took 11-34 s here.
QUICK = Sizes(disk=1 * GiB, count=2048, fio_io=16 * MiB, fio_runtime=5)
FULL = Sizes(disk=8 * GiB, count=8192, fio_io=64 * MiB, fio_runtime=15)

FIRST = "layouts/first-write"
REWRITE = "layouts/rewrite"
FIO = "layouts/fio-randwrite-4k"


def variant(layout: str, cell: Cell) -> str:
    return f"{layout} {cell.label}"


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


def bench_argv(path: str, fmt: str, cell: Cell, count: int) -> list[str]:
    return [
        "qemu-img", "bench", "-w", "-c", str(count), "-d", str(DEPTH), "-s", str(BLOCK),
        "-S", str(STRIDE), "-t", cell.cache, "-i", cell.io, "-f", fmt, path,
    ]  # fmt: skip


def _timed_bench(path: str, fmt: str, cell: Cell, count: int) -> float:
    argv = bench_argv(path, fmt, cell, count)
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise exception.NovaDiskTuningException(
            f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.returncode}"
        )
    # Charge every mode for durability: writeback leaves dirty pages behind.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def _bench_works(workdir: str, cell: Cell) -> str:
    """'' when qemu-img can run ``cell`` here, else qemu-img's complaint."""
    path = os.path.join(workdir, "probe.raw")
    with open(path, "wb") as handle:
        handle.truncate(MiB)
    try:
        argv = bench_argv(path, "raw", cell, 1)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        return "" if proc.returncode == 0 else (proc.stderr.strip() or "failed")
    finally:
        os.unlink(path)


class _Disks:
    """Makes the disks of each layout with the plugin's own qemu-img wrapper."""

    def __init__(self, conf: cfg.ConfigOpts, workdir: str, size: int) -> None:
        from nova_disk_tuning.images.qemu_img import QemuImg

        self.qemu_img = QemuImg(conf)
        self.size = size
        self.base = os.path.join(workdir, "base.raw")
        # The base is sparse: overlays only read it (copy-on-write of partly
        # written clusters), and reading holes keeps that read cheap and
        # equal for every overlay layout.
        self.qemu_img.create(self.base, "raw", size, preallocation="none")

    def make(self, layout: Layout, path: str) -> None:
        backing = self.base if layout.overlay else None
        self.qemu_img.create(
            path,
            layout.format,
            self.size,
            backing=backing,
            backing_format="raw" if backing else None,
            preallocation=layout.preallocation,
        )


class _Remover:
    """Deletes used disks in a background thread, at most ``backlog`` behind.

    Unlinking a fragmented file can take seconds (see Sizes); doing it while
    the next cell runs keeps the wall time down. It adds the same kind of
    background I/O to every cell, and the cell order rotates per repetition.
    """

    def __init__(self, backlog: int = 2) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=backlog)
        self._thread = threading.Thread(target=self._work, name="bench-remover", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (path := self._queue.get()) is not None:
            try:
                os.unlink(path)
            except OSError as exc:
                LOG.warning("could not remove %s: %s", path, exc)

    def remove(self, path: str) -> None:
        # Rename first: the next disk of the same layout reuses the name.
        doomed = f"{path}.{time.monotonic_ns()}.old"
        os.rename(path, doomed)
        self._queue.put(doomed)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def _tuned_cell(conf: cfg.ConfigOpts, layout: Layout, path: str, caps: object) -> Cell | None:
    """The cache/io cell tuning.decide() picks for this very file."""
    from nova_disk_tuning.storage.probe import StorageProbe
    from nova_disk_tuning.virt.libvirt.tuning import policy as tuning
    from nova_disk_tuning.virt.libvirt.tuning.facts import DiskFacts

    probe = StorageProbe()
    allocation = probe.allocation(path)
    facts = DiskFacts(
        name="vda",
        source_type="file",
        format=layout.format,
        path=path,
        # qcow2: the virtual size; its host allocation decides (KubeVirt's rule).
        size=_virtual_size(path, layout),
        allocated=allocation.allocated,
        backing_file=os.path.join(os.path.dirname(path), "base.raw") if layout.overlay else None,
        direct_io=probe.supports_direct_io(path),
        preallocated=layout.preallocation != "none",
    )
    # Decide as a host configured for this layout would: the policy reads
    # preallocate_images (e.g. to say why a disk it expected full is sparse).
    conf.set_override("preallocate_images", layout.preallocation)
    try:
        decided = tuning.decide(facts, caps, conf)
    finally:
        conf.clear_override("preallocate_images")
    cache = decided.cache.value or DEFAULTS.cache
    # io None: libvirt emits nothing and QEMU uses its thread pool.
    io = decided.io.value or "threads"
    LOG.debug("%s: tuned %s+%s (%s; %s)", layout.name, cache, io, decided.cache, decided.io)
    return Cell(cache, io)


def _virtual_size(path: str, layout: Layout) -> int | None:
    if layout.format == "raw":
        return os.stat(path).st_size
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", "-f", layout.format, path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)["virtual-size"])


def _host_caps(conf: cfg.ConfigOpts) -> object | None:
    try:
        from nova_disk_tuning.virt.libvirt.host import Host

        with Host(conf, read_only=True) as host:
            return host.caps()
    except Exception as exc:  # a missing libvirt must not cost the whole matrix
        LOG.warning("no tuned cells: host capabilities unavailable (%s)", exc)
        return None


def fio_argv(path: str, engine: str, sizes: Sizes) -> list[str]:
    return [
        "fio", "--name=randwrite", f"--filename={path}", "--rw=randwrite", f"--bs={BLOCK}",
        "--direct=1", f"--ioengine={engine}", f"--iodepth={DEPTH}", f"--size={sizes.disk}",
        f"--io_size={sizes.fio_io}", f"--runtime={sizes.fio_runtime}", "--end_fsync=1",
        "--output-format=json",
    ]  # fmt: skip


def _fio_iops(path: str, engine: str, sizes: Sizes) -> float:
    argv = fio_argv(path, engine, sizes)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise exception.NovaDiskTuningException(
            f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.returncode}"
        )
    return float(json.loads(proc.stdout)["jobs"][0]["write"]["iops"])


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

    cells = [DEFAULTS]
    for mode in DIRECT_MODES:
        cell = Cell("none", mode)
        problem = _bench_works(workdir, cell)
        if problem:
            LOG.warning(
                "%s not measured: qemu-img bench cannot use it here (%s)",
                cell.label,
                problem,
            )
        else:
            cells.append(cell)

    disks = _Disks(conf, workdir, sizes.disk)
    caps = _host_caps(conf)
    matrix: dict[str, list[Cell]] = {layout.name: list(cells) for layout in LAYOUTS}
    tuned: dict[str, Cell] = {}
    if caps is not None:
        for layout in LAYOUTS:
            # Decide on a disk made exactly as the measured ones are.
            path = os.path.join(workdir, f"{layout.name}.{layout.format}")
            disks.make(layout, path)
            try:
                tuned[layout.name] = pick = _tuned_cell(conf, layout, path, caps)
            finally:
                os.unlink(path)
            if pick not in matrix[layout.name]:
                # The policy picked a cell outside the matrix: measure it too.
                matrix[layout.name].append(pick)
    timings: dict[tuple[str, str, Cell], list[float]] = {}
    fio_engines = [e for e in ("libaio", "io_uring") if _fio_works(workdir, e)]
    fio_layouts = [layout for layout in LAYOUTS if layout.format == "raw"]
    cells_per_rep = sum(len(row) for row in matrix.values())
    steps = repeat * (cells_per_rep + len(fio_layouts) * len(fio_engines))
    done = 0

    remover = _Remover()
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
                        first = _timed_bench(path, layout.format, cell, sizes.count)
                        again = _timed_bench(path, layout.format, cell, sizes.count)
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
                        iops = _fio_iops(path, engine, sizes)
                    finally:
                        remover.remove(path)
                    timings.setdefault((FIO, layout.name, Cell("none", engine)), []).append(iops)
                    done += 1
                    report(100.0 * done / steps)
    finally:
        remover.close()
        os.unlink(disks.base)
    return _results(timings, tuned, sizes)


def _fio_works(workdir: str, engine: str) -> bool:
    path = os.path.join(workdir, "fio-probe.raw")
    argv = [
        "fio", "--name=probe", f"--filename={path}", "--rw=write", "--bs=4096", "--direct=1",
        f"--ioengine={engine}", "--size=1M", "--output-format=json",
    ]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        LOG.warning("fio experiment not run: fio is not installed (Debian package fio)")
        return False
    finally:
        if os.path.exists(path):
            os.unlink(path)
    if proc.returncode != 0:
        LOG.warning("fio with ioengine=%s not measured: %s", engine, proc.stderr.strip()[-200:])
        return False
    return True


def _results(
    timings: dict[tuple[str, str, Cell], list[float]], tuned: dict[str, Cell], sizes: Sizes
) -> list[Result]:
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
            made += f", overlay of a sparse raw base of {sizes.disk // GiB} GiB"
        how += (
            f"  ({phase[experiment]}; DISK: {layout_name}, {sizes.disk // GiB} GiB, "
            f"QemuImg.create {made}; {span // MiB} MiB span; wall time + fdatasync)"
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
