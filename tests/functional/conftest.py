"""Real storage for functional tests: loop devices, file systems, tmpfs.

Everything here is set up per test and torn down even when the test fails.
Loop devices come from ``losetup --find --show`` (other suites use loop
devices at the same time: never a fixed /dev/loopN).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0
requires_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: loop devices and mounts (CI runs these as root)"
)

MiB = 1 << 20
# mkfs.xfs (xfsprogs 6.x) refuses file systems under 300 MiB; the backing
# files are sparse, so this costs almost nothing.
MIN_SIZE = {"ext4": 64 * MiB, "ext2": 64 * MiB, "xfs": 320 * MiB, "tmpfs": 64 * MiB}
FS_KINDS = ("ext4", "ext2", "xfs", "tmpfs")


@dataclasses.dataclass
class LoopDevice:
    path: str  # /dev/loopN
    backing: str  # the backing file
    sector_size: int
    size: int


@dataclasses.dataclass
class Mount:
    path: str  # the mount point
    kind: str  # ext4, ext2, xfs, tmpfs
    loop: LoopDevice | None  # None for tmpfs


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def _detach(dev: str) -> None:
    subprocess.run(["losetup", "-d", dev], capture_output=True)


def _umount(point: str) -> None:
    if subprocess.run(["umount", point], capture_output=True).returncode != 0:
        # Last resort: something still holds the mount (a failed test's fd).
        subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture
def loop_device(tmp_path) -> Iterator[Callable[..., LoopDevice]]:
    """Factory: ``loop_device(sector_size=512, size=64 MiB)`` -> LoopDevice.

    The backing file is sparse, on the test's tmp_path. Detached afterwards.
    """
    if not IS_ROOT:
        pytest.skip("needs root: loop devices (CI runs these as root)")
    made: list[LoopDevice] = []

    def factory(sector_size: int = 512, size: int = 64 * MiB) -> LoopDevice:
        backing = str(tmp_path / f"loop-{len(made)}-{sector_size}.img")
        with open(backing, "wb") as f:
            f.truncate(size)
        dev = _run("losetup", "--find", "--show", "--sector-size", str(sector_size), backing)
        loop = LoopDevice(dev, backing, sector_size, size)
        made.append(loop)
        return loop

    try:
        yield factory
    finally:
        for loop in reversed(made):
            _detach(loop.path)


@pytest.fixture
def make_filesystem(tmp_path, loop_device) -> Iterator[Callable[..., Mount]]:
    """Factory: ``make_filesystem(kind, size=None)`` -> Mount of a fresh file system.

    kind: ext4, ext2, xfs (on a loop device) or tmpfs. Unmounted afterwards.
    """
    mounted: list[str] = []

    def factory(kind: str, size: int | None = None) -> Mount:
        if kind not in MIN_SIZE:
            raise ValueError(f"unknown file system kind {kind!r}; use one of {FS_KINDS}")
        size = size or MIN_SIZE[kind]
        point = tempfile.mkdtemp(prefix=f"mnt-{kind}-", dir=tmp_path)
        loop = None
        if kind == "tmpfs":
            _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", point)
        else:
            loop = loop_device(size=size)
            mkfs = {"ext4": ["mkfs.ext4", "-q", "-F"], "ext2": ["mkfs.ext2", "-q", "-F"]}
            _run(*mkfs.get(kind, ["mkfs.xfs", "-q", "-f"]), loop.path)
            _run("mount", "-t", kind, loop.path, point)
        mounted.append(point)
        return Mount(point, kind, loop)

    try:
        yield factory
    finally:
        for point in reversed(mounted):
            _umount(point)


@pytest.fixture
def filesystem(request, make_filesystem) -> str:
    """The mount dir of a fresh file system; kind by indirect parametrization.

    ``@pytest.mark.parametrize("filesystem", ["ext4", "tmpfs"], indirect=True)``;
    ext4 when not parametrized.
    """
    return make_filesystem(getattr(request, "param", "ext4")).path


@pytest.fixture
def small_filesystem(make_filesystem) -> Mount:
    """A 16 MiB ext4 file system on a loop device, for running out of space."""
    return make_filesystem("ext4", size=16 * MiB)


@pytest.fixture
def test_driver_conf(tmp_path) -> Path:
    """A nova.conf for the CLI: instances under tmp_path, libvirt's test driver."""
    path = tmp_path / "nova.conf"
    path.write_text(
        f"[DEFAULT]\ninstances_path = {tmp_path / 'instances'}\n"
        "[libvirt]\nconnection_uri = test:///default\nvirt_type = qemu\n"
    )
    return path
