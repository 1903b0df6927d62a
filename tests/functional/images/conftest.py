"""Real images for the images tests, made with the installed qemu-img."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

MiB = 1 << 20


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def write_random(path: str, size: int, data: int | None = None, stride: int = 4 * MiB) -> None:
    """A raw file of ``size`` bytes; ``data`` bytes of it random, spread in chunks."""
    data = size if data is None else data
    with open(path, "wb") as handle:
        handle.truncate(size)
        chunk = stride * data // size if data < size else stride
        for offset in range(0, size, stride):
            handle.seek(offset)
            handle.write(os.urandom(min(chunk, size - offset)))


def compare(a: str, fmt_a: str, b: str, fmt_b: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, a, b], capture_output=True, text=True
    )


@pytest.fixture(autouse=True)
def _needs_qemu_img() -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (Debian package qemu-utils)")


@pytest.fixture
def raw_image(tmp_path) -> str:
    path = str(tmp_path / "data.raw")
    write_random(path, 32 * MiB)
    return path


@pytest.fixture
def qcow2_image(tmp_path, raw_image) -> str:
    path = str(tmp_path / "data.qcow2")
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw_image, path)
    return path
