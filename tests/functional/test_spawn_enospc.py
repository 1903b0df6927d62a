"""A full file system at each step of a spawn, for every preallocation mode.

The instances path is a small ext4 on a loop device. Each case makes one step
run out of space: fetching the image into the cache, converting it to raw,
creating the root disk, preallocating the ephemeral disk. The spawn must fail
in one line that gives the bytes it wanted (never 0) and the bytes free, and
leave nothing: no instance, no partial cache entry, no disk.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nova_disk_tuning.common import staging
from tests.functional.conftest import MiB, requires_root

pytestmark = requires_root
MESSAGE = re.compile(r"Not enough space to allocate (\S+): (\d+) bytes wanted, (\d+) bytes free")


def make_image(directory: Path, name: str, data_mib: int, fmt: str, compress: bool = False) -> str:
    """An image of ``data_mib`` MiB: random (incompressible) or a repeated pattern."""
    raw = directory / f"{name}.raw"
    with open(raw, "wb") as handle:
        for _ in range(data_mib):
            handle.write(b"nova" * (MiB // 4) if compress else os.urandom(MiB))
    if fmt == "raw":
        return str(raw)
    out = directory / f"{name}.qcow2"
    argv = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2"]
    subprocess.run([*argv, *(["-c"] if compress else []), str(raw), str(out)], check=True)
    raw.unlink()
    return str(out)


def spawn(instances: Path, mode: str, images_type: str, image: str, *more: str):
    conf = instances.parent / "nova.conf"
    conf.write_text(
        f"[DEFAULT]\ninstances_path = {instances}\npreallocate_images = {mode}\n"
        "[libvirt]\nconnection_uri = test:///default\nvirt_type = qemu\n"
        f"images_type = {images_type}\n"
    )
    argv = [sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", str(conf)]
    run = subprocess.run(
        [*argv, "spawn", "vm", "--image", image, *more], capture_output=True, text=True
    )
    listing = subprocess.run([*argv, "list", "--json"], capture_output=True, text=True)
    return run, json.loads(listing.stdout or "[]")


def assert_nothing_left(instances: Path) -> None:
    for path in instances.rglob("*"):
        rel = path.relative_to(instances)
        if rel.parts[0] == "locks":
            continue
        if rel.parts[0] == "_base" and not any(staging.is_stage(part) for part in rel.parts):
            # A finished cache entry is the cache's, not a leftover.
            continue
        pytest.fail(f"left behind: {rel}")


def assert_one_enospc_line(run: subprocess.CompletedProcess, wanted: int) -> None:
    assert run.returncode == 1, run.stdout
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, run.stderr
    match = MESSAGE.search(errors[0])
    assert match, errors[0]
    # What it still needs: a qcow2's metadata is allocated already.
    assert int(match.group(2)) >= wanted * 0.99, errors[0]
    assert int(match.group(3)) < int(match.group(2))


MODES = ["none", "space", "performance"]


@pytest.fixture
def instances(make_filesystem) -> Path:
    return Path(make_filesystem("ext4", size=64 * MiB).path) / "instances"


@pytest.mark.parametrize("mode", MODES)
def test_fetch(instances, tmp_path, mode):
    image = make_image(tmp_path, "big", 80, "raw")
    run, listed = spawn(instances, mode, "qcow2", image)
    assert_one_enospc_line(run, 80 * MiB)
    assert listed == []
    assert_nothing_left(instances)


@pytest.mark.parametrize("mode", MODES)
def test_convert(instances, tmp_path, mode):
    # 8 MiB of compressed qcow2, 80 MiB once converted to raw (force_raw_images).
    image = make_image(tmp_path, "packed", 80, "qcow2", compress=True)
    assert os.path.getsize(image) < 16 * MiB
    run, listed = spawn(instances, mode, "qcow2", image)
    assert_one_enospc_line(run, 80 * MiB if mode != "none" else 1)
    assert listed == []
    assert_nothing_left(instances)


@pytest.mark.parametrize("mode", MODES)
def test_root_disk(instances, tmp_path, mode):
    # The base (32 MiB) fits; a flat copy of it as the root disk does not.
    image = make_image(tmp_path, "mid", 32, "raw")
    run, listed = spawn(instances, mode, "flat", image)
    assert_one_enospc_line(run, 32 * MiB if mode != "none" else 1)
    assert listed == []
    assert_nothing_left(instances)


@pytest.mark.parametrize("mode", MODES)
def test_ephemeral_preallocation(instances, tmp_path, mode):
    image = make_image(tmp_path, "small", 4, "qcow2")
    run, listed = spawn(instances, mode, "qcow2", image, "--ephemeral-gb", "1")
    if mode == "none":
        # Sparse by configuration: nothing to run out of yet, the spawn works.
        assert run.returncode == 0, run.stderr
        assert [r["name"] for r in listed] == ["vm"]
        return
    assert_one_enospc_line(run, 1 << 30)
    assert listed == []
    assert_nothing_left(instances)
