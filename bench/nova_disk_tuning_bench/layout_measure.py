"""The steps of the layouts experiment: make a disk, time qemu-img bench and fio on it.

Also what the steps need around them: whether qemu-img and fio can use a
mode here, a background remover for used disks, and the cell the plugin's
policy picks for a disk (asked of ``tuning.decide`` itself).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common.files import remove_if_exists
from nova_disk_tuning.common.units import MiB
from nova_disk_tuning_bench.layout_matrix import (
    DEFAULTS,
    Cell,
    Layout,
    Sizes,
    bench_argv,
    fio_argv,
)

if TYPE_CHECKING:
    from nova_disk_tuning.policy.facts import HostCaps

LOG = logging.getLogger(__name__)


def _run(argv: list[str]) -> str:
    """Run a measuring tool; its stdout, or an error naming the command."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise exception.NovaDiskTuningException(
            f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.returncode}"
        )
    return proc.stdout


def timed_bench(path: str, fmt: str, cell: Cell, count: int) -> float:
    """Seconds of one qemu-img bench run plus the fdatasync that makes it durable."""
    started = time.perf_counter()
    _run(bench_argv(path, fmt, cell, count))
    # Charge every mode for durability: writeback leaves dirty pages behind.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def bench_works(workdir: str, cell: Cell) -> str:
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


def fio_iops(path: str, engine: str, sizes: Sizes) -> float:
    """Write IOPS of one fio run."""
    out = _run(fio_argv(path, engine, sizes))
    return float(json.loads(out)["jobs"][0]["write"]["iops"])


def fio_works(workdir: str, engine: str) -> bool:
    """Whether fio is installed and its ``engine`` works here (a warning says why not)."""
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
        remove_if_exists(path)
    if proc.returncode != 0:
        LOG.warning("fio with ioengine=%s not measured: %s", engine, proc.stderr.strip()[-200:])
        return False
    return True


class Disks:
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


class Remover:
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


def tuned_cell(conf: cfg.ConfigOpts, layout: Layout, path: str, caps: HostCaps) -> Cell:
    """The cache/io cell the policy picks for this very file, measured as every disk is."""
    from nova_disk_tuning.images.qemu_img import QemuImg
    from nova_disk_tuning.policy.decide import decide
    from nova_disk_tuning.policy.measure import measure_local
    from nova_disk_tuning.storage.probe import StorageProbe

    probe = StorageProbe()
    facts = measure_local(
        path,
        name="vda",
        probe=probe,
        qemu_img=QemuImg(conf, probe=probe),
        format=layout.format,
        source_type="file",
        driver="bench",
    )
    # Decide as a host configured for this layout would: the policy reads
    # preallocate_images (e.g. to say why a disk it expected full is sparse).
    conf.set_override("preallocate_images", layout.preallocation)
    try:
        decided = decide(facts, caps, conf)
    finally:
        conf.clear_override("preallocate_images")
    cache = str(decided.cache.value or DEFAULTS.cache)
    # io None: libvirt emits nothing and QEMU uses its thread pool.
    io = str(decided.io.value or "threads")
    LOG.debug("%s: tuned %s+%s (%s; %s)", layout.name, cache, io, decided.cache, decided.io)
    return Cell(cache, io)


def host_caps(conf: cfg.ConfigOpts) -> HostCaps | None:
    """The host's capabilities from libvirt, or None (and a warning) without libvirt."""
    try:
        from nova_disk_tuning.host import Host

        with Host(conf, read_only=True) as host:
            return host.caps()
    except Exception as exc:  # a missing libvirt must not cost the whole matrix
        LOG.warning("no tuned cells: host capabilities unavailable (%s)", exc)
        return None
