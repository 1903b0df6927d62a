"""``zero`` never writes to a disk something else holds, on real devices and files.

A mounted file system's device, an active swap device, the file behind a
mounted loop device, an image a QEMU process has open (qemu-io stands in for
a running guest: it takes the same image locks), and a cached base behind an
instance's overlay: each is refused in one line and left byte for byte as it
was; the same disk is zeroed once nothing holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from nova_disk_tuning.storage import holders
from tests.functional.conftest import MiB, requires_root
from tests.functional.storage.util import PATTERN, fill

pytestmark = requires_root


def digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@contextlib.contextmanager
def quiesced(mount_point: str) -> Iterator[None]:
    """The mounted file system writes nothing to its device while inside.

    A mounted ext4 keeps writing on its own (the 5 s journal commit, the
    lazy inode-table init thread, writeback), so a digest of its device taken
    twice can differ with nobody else touching it. fsfreeze flushes it and
    blocks its writes; a write that bypasses the file system (the one these
    tests guard against) still lands and changes the digest.
    """
    subprocess.run(["fsfreeze", "--freeze", mount_point], check=True)
    try:
        yield
    finally:
        subprocess.run(["fsfreeze", "--unfreeze", mount_point], check=True)


def zero(path: str, conf: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "nova_disk_tuning.cmd.main"]
    argv += ["--config-file", conf or os.devnull, "zero", path]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "it is in use" in lines[0] and "Nothing was written" in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_device_with_a_mounted_file_system(make_filesystem):
    mount = make_filesystem("ext4")
    data = os.path.join(mount.path, "data")
    fill(data, 4 * MiB)
    with quiesced(mount.path):
        before = digest(mount.loop.path)
        assert_refused(zero(mount.loop.path), "mounted")
        assert digest(mount.loop.path) == before
    with open(data, "rb") as handle:
        assert handle.read(MiB) == PATTERN


def test_an_active_swap_device(loop_device):
    device = loop_device(size=16 * MiB)
    subprocess.run(["mkswap", device.path], check=True, capture_output=True)
    swapped = subprocess.run(["swapon", device.path], capture_output=True, text=True)
    if swapped.returncode != 0:
        pytest.fail(f"swapon failed here: {swapped.stderr.strip()}")
    try:
        before = digest(device.path)
        assert_refused(zero(device.path), "swap")
        assert digest(device.path) == before
    finally:
        subprocess.run(["swapoff", device.path], check=True)
    assert zero(device.path).returncode == 0  # nothing holds it any more


def test_the_file_behind_a_mounted_loop_device(make_filesystem):
    mount = make_filesystem("ext4")
    fill(os.path.join(mount.path, "data"), MiB)
    with quiesced(mount.path):
        before = digest(mount.loop.backing)
        assert_refused(zero(mount.loop.backing), f"backing file of {mount.loop.path}")
        assert digest(mount.loop.backing) == before


def _wait_until_locked(path: str, holder: subprocess.Popen) -> None:
    """The progress marker: QEMU's image lock is on the file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        deadline = time.monotonic() + 30
        while holders.qemu_lock_holder(fd) is None:
            assert holder.poll() is None, "qemu-io ended before it held the image"
            assert time.monotonic() < deadline, "qemu-io never locked the image"
            time.sleep(0.01)
    finally:
        os.close(fd)


def test_an_image_qemu_has_open(tmp_path):
    image = str(tmp_path / "disk.raw")
    fill(image, 4 * MiB)
    # qemu-io opens the image as QEMU does (the same locks) and sleeps.
    holder = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "sleep 600000", image])
    try:
        _wait_until_locked(image, holder)
        assert_refused(zero(image), "QEMU or qemu-img")
        with open(image, "rb") as handle:
            assert handle.read(MiB) == PATTERN
    finally:
        holder.kill()
        holder.wait(30)
    assert zero(image).returncode == 0


def test_a_cached_base_behind_an_instance_overlay(tmp_path):
    instances = tmp_path / "instances"
    base = instances / "_base" / ("ab" * 20)
    base.parent.mkdir(parents=True)
    fill(str(base), 4 * MiB)
    (base.parent / (base.name + ".info")).write_text(
        json.dumps({"image_id": "cirros", "format": "raw", "virtual_size": 4 * MiB})
    )
    overlay = instances / "7d2e1f0a-3b4c-4d5e-8f6a-7b8c9d0e1f2a" / "disk"
    overlay.parent.mkdir()
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)],
        check=True,
    )
    conf = tmp_path / "nova.conf"
    conf.write_text(f"[DEFAULT]\ninstances_path = {instances}\n")
    before = digest(str(base))
    assert_refused(zero(str(base), str(conf)), "cached base of image 'cirros'", str(overlay))
    assert digest(str(base)) == before
    overlay.unlink()
    assert zero(str(base), str(conf)).returncode == 0
