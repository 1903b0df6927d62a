"""Benchmark: qcow2 -> raw conversion, ours against what Nova and others do.

Two images: dense (incompressible random data, 2 GiB; quick: 256 MiB) and
sparse (25 % data spread over 4x the virtual size). Every variant converts
the same image in the same run, repetitions interleaved, from a source in
one of two states set before each timed run: ``cold`` (page cache dropped,
as root; else the source's pages evicted) and ``warm`` (the source read into
the page cache, as the image Nova just downloaded into ``_base`` is). The
dense image is converted in both states, the sparse one cold.

Run: ``python -m nova_disk_tuning_bench.conversion WORKDIR [--quick]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from nova_disk_tuning import conf as ndt_conf
from nova_disk_tuning.common.files import remove_if_exists
from nova_disk_tuning.common.units import MiB
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning_bench import standalone
from nova_disk_tuning_bench.model import Result, ratio
from nova_disk_tuning_bench.summary import Target

_CHUNK = 8 * MiB
_FULL = "conversion/qcow2-dense-2048M-data"

# What the issues ask of the default, in both source states: at most 0.8x the
# time of Nova's `qemu-img convert -t none`, and within 1.3x of the write
# bound (dd of the same bytes with O_DIRECT).
TARGETS = tuple(
    target
    for state in ("cold", "warm")
    for target in (
        Target(
            f"{_FULL}-{state}", "nova", 1 / 0.8, f"ours vs Nova's -t none, {state} source", "ours"
        ),
        Target(
            f"{_FULL}-{state}",
            "dd O_DIRECT",
            1 / 1.3,
            f"ours vs the dd bound, {state} source",
            "ours",
        ),
    )
)


def _write_random(path: str, size: int, data: int) -> None:
    """``data`` bytes of random data spread over a ``size``-byte sparse raw file."""
    stride = _CHUNK * size // data
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset in range(0, size, stride):
            handle.seek(offset)
            handle.write(os.urandom(min(_CHUNK, size - offset)))
        handle.flush()
        os.fsync(handle.fileno())


def drop_caches(sources: list[str]) -> bool:
    """Cold sources: every clean page dropped (root), else the sources' own evicted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return True
    except OSError:
        for path in sources:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return False


def _warm(sources: list[str]) -> bool:
    """Warm sources: read whole into the page cache (what a download leaves behind)."""
    for path in sources:
        with open(path, "rb") as handle:
            while handle.read(_CHUNK):
                pass
    return True


def _shell(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, check=True, capture_output=True)

    return run


def _variants(
    workdir: str, src: str, raw: str | None, dst: str
) -> dict[str, tuple[str, Callable[[], object]]]:
    """name -> (how, callable). ``raw``: a raw copy of the data, for the dd bound."""

    def ours(**tuning: object) -> Callable[[], object]:
        conf = ndt_conf.new_conf(
            overrides={"DEFAULT": {"instances_path": workdir}, "disk_tuning": tuning}
        )
        tool = QemuImg(conf)
        return lambda: tool.convert(src, dst, "qcow2", "raw", preallocation="none")

    qemu = ["qemu-img", "convert"]
    tail = ["-O", "raw", "-f", "qcow2", src, dst]
    variants = {
        "ours": ("QemuImg.convert (config defaults)", ours()),
        "ours -T none": (
            "QemuImg.convert, convert_source_cache=none",
            ours(convert_source_cache="none"),
        ),
        "ours -T writeback": (
            "QemuImg.convert, convert_source_cache=writeback",
            ours(convert_source_cache="writeback"),
        ),
        "ours no -W": (
            "QemuImg.convert, convert_out_of_order=False",
            ours(convert_out_of_order=False),
        ),
        "ours -m 16": ("QemuImg.convert, convert_coroutines=16", ours(convert_coroutines=16)),
        "ours no --target-is-zero": (
            "QemuImg.convert, convert_target_is_zero=False",
            ours(convert_target_is_zero=False),
        ),
        "nova": (" ".join([*qemu, "-t", "none", *tail]), _shell([*qemu, "-t", "none", *tail])),
        "writethrough": (
            " ".join([*qemu, "-t", "writethrough", *tail]),
            _shell([*qemu, "-t", "writethrough", *tail]),
        ),
        "unsafe+sync": (
            " ".join([*qemu, "-t", "unsafe", *tail]) + " && sync",
            _shell(["sh", "-c", " ".join([*qemu, "-t", "unsafe", *tail]) + " && sync"]),
        ),
    }
    if raw is not None:
        dd = ["dd", f"if={raw}", f"of={dst}", "bs=4M", "oflag=direct", "conv=fdatasync"]
        variants["dd O_DIRECT"] = (" ".join(dd) + " (the physical bound)", _shell(dd))
    return variants


def _experiment(
    name: str, workdir: str, src: str, raw: str | None, nbytes: int, repeat: int, state: str
) -> list[Result]:
    dst = os.path.join(workdir, "out.raw")
    variants = _variants(workdir, src, raw, dst)
    timings: dict[str, list[float]] = {v: [] for v in variants}
    sources = [src] + ([raw] if raw else [])
    prepare = _warm if state == "warm" else drop_caches
    complete = False
    for _ in range(repeat):
        for variant, (_how, run) in variants.items():  # interleaved
            remove_if_exists(dst)
            complete = prepare(sources)
            started = time.monotonic()
            run()
            timings[variant].append(time.monotonic() - started)
    remove_if_exists(dst)
    note = {
        ("warm", True): "; source read into the page cache before each run",
        ("cold", True): "; page cache dropped before each run",
        ("cold", False): "; source pages evicted before each run (not root: caches kept)",
    }[(state, complete)]
    return [
        Result(
            experiment=f"conversion/{name}",
            variant=variant,
            how=how + note,
            seconds=timings[variant],
            baseline=None if variant == "nova" else "nova",
            nbytes=nbytes,
            chosen=variant == "ours",
        )
        for variant, (how, _run) in variants.items()
    ]


def run(workdir: str, quick: bool = False, repeat: int = 3) -> list[Result]:
    os.makedirs(workdir, exist_ok=True)
    data = 256 * MiB if quick else 2048 * MiB
    results = []
    for name, virtual in (("dense", data), ("sparse-25pct", 4 * data)):
        raw = os.path.join(workdir, f"{name}.raw")
        src = os.path.join(workdir, f"{name}.qcow2")
        if not os.path.exists(src):
            _write_random(raw, virtual, data)
            subprocess.run(
                ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, src], check=True
            )
        dd_source = raw if name == "dense" else None
        label = f"qcow2-{name}-{data // MiB}M-data"
        for state in ("cold", "warm") if name == "dense" else ("cold",):
            results += _experiment(f"{label}-{state}", workdir, src, dd_source, data, repeat, state)
    return results


def report(results: list[Result]) -> str:
    lines = []
    by_experiment: dict[str, dict[str, Result]] = {}
    for result in results:
        by_experiment.setdefault(result.experiment, {})[result.variant] = result
    for experiment, variants in by_experiment.items():
        lines.append(experiment)
        ours = variants["ours"]
        for variant, result in variants.items():
            vs_ours = result.median / ours.median
            vs_nova = ratio(result, variants["nova"])
            lines.append(
                f"  {variant:26s} median {result.median:7.2f} s  spread {result.spread:5.0%}  "
                f"time vs ours {vs_ours:5.2f}x  speed vs nova {vs_nova:5.2f}x"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(standalone.main(__doc__, run, report))
