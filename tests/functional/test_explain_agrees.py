"""``explain --disk PATH`` and a spawned instance's ``explain NAME`` decide alike.

Both measure the disk through the same functions (storage kind, allocation,
O_DIRECT); this test spawns instances on each kind of storage this machine
can make and checks that explaining the instance's disk files by path gives
the same facts, decisions and reasons as the record the spawn wrote. (CIFS
and LVM need a server or device-mapper, which this machine lacks: their
storage kind is covered by tests/unit/storage/test_storage_kind.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nova_disk_tuning.images.sample import build_sample_image as build_image
from tests.functional.conftest import MiB, requires_root

pytestmark = requires_root
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    return build_image(str(tmp_path_factory.mktemp("image")), size_mb=16, name="agree")


def cli(config: Path, *argv: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", str(config), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def write_conf(directory: Path, instances: str, mode: str, images_type: str) -> Path:
    path = directory / f"nova-{mode}-{images_type}.conf"
    path.write_text(
        f"[DEFAULT]\ninstances_path = {instances}\npreallocate_images = {mode}\n"
        f"[libvirt]\nconnection_uri = test:///default\nvirt_type = qemu\n"
        f"images_type = {images_type}\n"
    )
    return path


def disk_spec(facts: dict) -> str:
    spec = f"path={facts['path']},name={facts['name']},format={facts['format']},bus={facts['bus']}"
    if facts["shareable"]:
        spec += ",shareable"
    if facts["is_volume"]:
        spec += f",volume={facts['driver']}"
    return spec


def assert_same(spawned: dict, by_path: dict) -> None:
    for left, right in zip(spawned["facts"], by_path["facts"], strict=True):
        if not left["is_volume"]:
            # The backend's name (flat, qcow2) is how the disk came to be;
            # explain by path only knows the volume driver it was told.
            left.pop("driver"), right.pop("driver")
        assert left == right
    assert spawned["disks"] == by_path["disks"]
    assert spawned["iothreads"] == by_path["iothreads"]


@pytest.mark.parametrize("images_type", ["flat", "qcow2"])
@pytest.mark.parametrize("mode", ["none", "space", "performance"])
@pytest.mark.parametrize("kind", ["ext4", "tmpfs", "xfs", "ext2"])
def test_file_disks(make_filesystem, tmp_path, image, kind, mode, images_type):
    mount = make_filesystem(kind)
    config = write_conf(tmp_path, os.path.join(mount.path, "instances"), mode, images_type)
    name = f"agree-{kind}-{mode}-{images_type}"
    cli(config, "spawn", name, "--image", image, "--ephemeral-gb", "0", "--swap-mb", "8", "--json")
    spawned = cli(config, "explain", name, "--json")
    specs = [arg for f in spawned["facts"] for arg in ("--disk", disk_spec(f))]
    assert len(specs) == 4  # root and swap
    by_path = cli(config, "explain", *specs, "--json")
    assert_same(spawned, by_path)


def test_block_volume_on_a_loop_device(loop_device, tmp_path, image):
    loop = loop_device(size=32 * MiB)
    volume = tmp_path / "volume.json"
    volume.write_text(
        json.dumps(
            {
                "driver_volume_type": "local",
                "serial": "0b0c0d0e-1111-2222-3333-444455556666",
                "data": {"device_path": loop.path, "access_mode": "rw"},
            }
        )
    )
    config = write_conf(tmp_path, str(tmp_path / "instances"), "space", "flat")
    cli(config, "spawn", "agree-block", "--image", image, "--volume", str(volume), "--json")
    spawned = cli(config, "explain", "agree-block", "--json")
    vol = next(f for f in spawned["facts"] if f["path"] == loop.path)
    assert vol["source_type"] == "block" and vol["storage_kind"] is None
    specs = [arg for f in spawned["facts"] for arg in ("--disk", disk_spec(f))]
    by_path = cli(config, "explain", *specs, "--json")
    assert_same(spawned, by_path)
