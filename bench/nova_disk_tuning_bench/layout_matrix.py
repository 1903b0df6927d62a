"""What the layouts experiment measures: disk layouts x cache/AIO cells, sizes, commands.

Definitions only; :mod:`~nova_disk_tuning_bench.layouts` runs them.
"""

from __future__ import annotations

import dataclasses

from nova_disk_tuning.common.units import GiB, MiB

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


def bench_argv(path: str, fmt: str, cell: Cell, count: int) -> list[str]:
    return [
        "qemu-img", "bench", "-w", "-c", str(count), "-d", str(DEPTH), "-s", str(BLOCK),
        "-S", str(STRIDE), "-t", cell.cache, "-i", cell.io, "-f", fmt, path,
    ]  # fmt: skip


def fio_argv(path: str, engine: str, sizes: Sizes) -> list[str]:
    return [
        "fio", "--name=randwrite", f"--filename={path}", "--rw=randwrite", f"--bs={BLOCK}",
        "--direct=1", f"--ioengine={engine}", f"--iodepth={DEPTH}", f"--size={sizes.disk}",
        f"--io_size={sizes.fio_io}", f"--runtime={sizes.fio_runtime}", "--end_fsync=1",
        "--output-format=json",
    ]  # fmt: skip
