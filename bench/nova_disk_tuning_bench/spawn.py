"""Benchmark: spawn time from an uncached and a cached image, and 16 concurrent spawns.

Each spawn is the CLI in its own process, timed from the outside
(``nova-disk-tuning --config-file C spawn NAME --image IMG``), on libvirt's
test driver with ``images_type = qcow2`` and ``preallocate_images = none``,
so the figures are the plugin's own work: fetching the image into the cache,
checking and converting it (uncached only), creating the overlay, measuring
it, tuning, defining the domain.

Variants (one repetition of each, interleaved, per round):

* ``uncached``: the first spawn of an image id: fetch + convert to raw;
* ``cached``: a second spawn of the same image id: the cache entry is reused;
* ``16-concurrent-uncached``: 16 processes spawn 16 instances of one new
  image id at the same moment; the time is the wall time until the last
  exits. The base-image lock makes one of them convert and the others wait
  and reuse it; the conversions are counted from the processes' logs and
  any count other than one is logged as a warning (a report note).

The image is a qcow2 of incompressible random data (quick: 512 MiB, full:
2 GiB), so the conversion is real work compared with the fixed cost of a
process. That fixed cost is mostly Python imports (about 0.8 s of CPU per
process here); the spawned processes may write bytecode caches
(``PYTHONDONTWRITEBYTECODE`` is dropped from their environment) and one
untimed ``--help`` run warms them, as on an installed host.

Run: ``python -m nova_disk_tuning_bench.spawn WORKDIR [--quick] [--repeat N]``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from oslo_log import log as logging

from nova_disk_tuning.common.units import MiB
from nova_disk_tuning_bench import standalone
from nova_disk_tuning_bench.model import Result

LOG = logging.getLogger(__name__)
CONCURRENT = 16
CONVERSION_LOG = "converting qcow2 to raw"


def _make_image(workdir: str, size: int) -> str:
    image = os.path.join(workdir, f"random-{size // MiB}M.qcow2")
    if os.path.exists(image):
        return image
    raw = image + ".raw"
    with open(raw, "wb") as handle:
        for _ in range(size // (8 * MiB)):
            handle.write(os.urandom(8 * MiB))
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, image],
        check=True,
        capture_output=True,
    )
    os.unlink(raw)
    return image


def _config(directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "nova.conf")
    with open(path, "w") as handle:
        handle.write(
            f"[DEFAULT]\ninstances_path = {os.path.join(directory, 'instances')}\n"
            "preallocate_images = none\n"
            "[libvirt]\nconnection_uri = test:///default\nvirt_type = qemu\n"
            "images_type = qcow2\n"
        )
    return path


def _argv(config: str, name: str, image: str, image_id: str) -> list[str]:
    return [
        sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", config, "-v",
        "spawn", name, "--image", image, "--image-id", image_id, "--json",
    ]  # fmt: skip


def _how(argv: list[str]) -> str:
    return "nova-disk-tuning " + " ".join(argv[3:])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _spawn(config: str, name: str, image: str, image_id: str) -> tuple[float, dict, str]:
    argv = _argv(config, name, image, image_id)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env())
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{_how(argv)} failed: {proc.stderr.strip()[-2000:]}")
    return seconds, json.loads(proc.stdout), proc.stderr


def _concurrent(config: str, image: str, image_id: str, count: int) -> tuple[float, int, int]:
    """Wall time of ``count`` simultaneous spawns, conversions seen, cache misses."""
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            _argv(config, f"c{index}", image, image_id),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for index in range(count)
    ]
    outputs = [proc.communicate() for proc in procs]
    seconds = time.monotonic() - started
    failed = [err for proc, (_, err) in zip(procs, outputs, strict=True) if proc.returncode]
    if failed:
        raise RuntimeError(f"{len(failed)} of {count} spawns failed: {failed[0][-2000:]}")
    conversions = sum(err.count(CONVERSION_LOG) for _, err in outputs)
    misses = sum(not json.loads(out)["image"]["cache_hit"] for out, _ in outputs)
    return seconds, conversions, misses


def run(
    workdir: str,
    quick: bool = False,
    repeat: int = 3,
    progress: Callable[[float], None] | None = None,
) -> list[Result]:
    os.makedirs(workdir, exist_ok=True)
    size = 512 * MiB if quick else 2048 * MiB
    image = _make_image(workdir, size)
    experiment = f"spawn/random-{size // MiB}M-qcow2"
    subprocess.run(
        [sys.executable, "-m", "nova_disk_tuning.cmd.main", "--help"],
        capture_output=True,
        env=_env(),
        check=True,
    )
    times: dict[str, list[float]] = {"uncached": [], "cached": [], "concurrent": []}
    conversions: list[int] = []
    for round_ in range(repeat):
        directory = os.path.join(workdir, f"round-{round_}")
        shutil.rmtree(directory, ignore_errors=True)
        config = _config(directory)
        image_id = f"bench-{os.getpid()}-{round_}"
        seconds, record, log = _spawn(config, "uncached", image, image_id)
        if record["image"]["cache_hit"] or CONVERSION_LOG not in log:
            raise RuntimeError(f"round {round_}: the first spawn did not convert the image")
        times["uncached"].append(seconds)
        seconds, record, _ = _spawn(config, "cached", image, image_id)
        if not record["image"]["cache_hit"]:
            raise RuntimeError(f"round {round_}: the second spawn did not reuse the cache")
        times["cached"].append(seconds)
        seconds, converted, misses = _concurrent(config, image, f"{image_id}-c", CONCURRENT)
        times["concurrent"].append(seconds)
        conversions.append(converted)
        if converted != 1 or misses != 1:
            LOG.warning(
                "%d concurrent spawns of one image converted it %d times (%d cache misses); "
                "expected exactly one",
                CONCURRENT,
                converted,
                misses,
            )
        shutil.rmtree(directory, ignore_errors=True)
        if progress:
            progress(100.0 * (round_ + 1) / repeat)
    config_hint = "C (test:///default, images_type=qcow2, preallocate_images=none)"
    base = _argv(config_hint, "NAME", image, "ID")
    return [
        Result(
            experiment, "uncached", _how(base) + "  # new image id", times["uncached"], nbytes=size
        ),
        Result(
            experiment,
            "cached",
            _how(base) + "  # same image id again",
            times["cached"],
            baseline="uncached",
            chosen=True,
        ),
        Result(
            experiment,
            f"{CONCURRENT}-concurrent-uncached",
            f"{CONCURRENT} x ({_how(base)}) at once, one new image id; "
            f"conversions per round: {conversions}",
            times["concurrent"],
            baseline="uncached",
        ),
    ]


def report(results: list[Result]) -> str:
    by_variant = {r.variant: r for r in results}
    uncached = by_variant["uncached"]
    lines = [results[0].experiment]
    for result in results:
        lines.append(
            f"  {result.variant:26s} median {result.median:6.2f} s  "
            f"(runs {', '.join(f'{s:.2f}' for s in result.seconds)})  "
            f"{result.median / uncached.median:4.2f}x uncached"
        )
    lines.append(f"  {by_variant[f'{CONCURRENT}-concurrent-uncached'].how.split('; ')[-1]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(standalone.main(__doc__, run, report))
