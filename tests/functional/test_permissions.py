"""Nothing the project writes is more readable than what it came from."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.conftest import MiB

PROGRAM = [sys.executable, "-m", "nova_disk_tuning.cmd.main"]


@pytest.fixture
def config(test_driver_conf) -> Path:
    return test_driver_conf


def cli(config: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PROGRAM, "--config-file", str(config), *argv], capture_output=True, text=True, timeout=120
    )


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def private(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return str(path)


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_private_source_converts_into_a_private_target(config, tmp_path, fmt):
    source = private(tmp_path / "secret.raw", os.urandom(MiB))
    target = tmp_path / f"out.{fmt}"
    run = cli(config, "convert", source, str(target), "-O", fmt)
    assert run.returncode == 0, run.stderr
    assert mode(target) == 0o600


def test_private_images_and_boot_files_stay_private_in_the_instance(config, tmp_path):
    image = private(tmp_path / "disk.raw", os.urandom(MiB))
    kernel = private(tmp_path / "vmlinuz", b"\x7fELF a kernel")
    ramdisk = tmp_path / "initrd.link"
    ramdisk.symlink_to(private(tmp_path / "initrd", b"an initramfs"))  # followed, mode kept
    run = cli(
        config,
        "spawn",
        "vm",
        "--image",
        image,
        "--kernel",
        kernel,
        "--ramdisk",
        str(ramdisk),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert mode(record["kernel"]) == 0o600 and mode(record["ramdisk"]) == 0o600
    assert Path(record["ramdisk"]).read_bytes() == b"an initramfs"
    assert mode(record["image"]["cached_path"]) == 0o600
