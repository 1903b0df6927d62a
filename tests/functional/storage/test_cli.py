"""The storage commands on real storage, through main()."""

from __future__ import annotations

import json
import os

from nova_disk_tuning.cmd import main as cli
from tests.functional.conftest import MiB, requires_root
from tests.functional.storage import util

pytestmark = requires_root


def _run(capsys, *argv):
    status = cli.main(["--config-file", os.devnull, *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_probe_tmpfs_ext2_and_a_device(make_filesystem, loop_device, capsys):
    tmpfs = make_filesystem("tmpfs").path
    ext2 = make_filesystem("ext2").path
    loop = loop_device(sector_size=4096, size=4 * MiB)
    status, out, _ = _run(capsys, "probe", tmpfs, ext2, loop.path, "--json")
    assert status == 0
    by_path = {p["path"]: p for p in json.loads(out)["paths"]}
    assert by_path[tmpfs]["fs_type"] == "tmpfs"
    assert "zero_range" not in by_path[tmpfs]["fallocate_modes"]
    assert by_path[ext2]["fallocate_modes"] == ["punch_hole"]
    device = by_path[loop.path]
    assert device["block_device"] and device["fs_type"] == "block"
    assert device["allocation"]["size"] == 4 * MiB


def test_zero_a_4k_device(loop_device, capsys):
    loop = loop_device(sector_size=4096, size=4 * MiB)
    util.fill(loop.path, 4 * MiB)
    status, out, _ = _run(capsys, "zero", loop.path, "--offset", "1M", "--length", "1M", "--json")
    assert status == 0
    data = json.loads(out)
    assert data["method"] == "zero_range" and data["bytes"] == MiB
    util.assert_zeroed(loop.path, MiB, MiB, 4 * MiB)


def test_zero_sparse_on_tmpfs(make_filesystem, capsys):
    path = os.path.join(make_filesystem("tmpfs").path, "disk")
    util.fill(path, 4 * MiB)
    status, out, _ = _run(capsys, "zero", path, "--sparse")
    assert status == 0 and "with punch_hole" in out
    assert util.allocated(path) == 0


def test_zero_past_the_device_end_fails_in_one_line(loop_device, capsys):
    loop = loop_device(size=MiB)
    status, out, err = _run(capsys, "zero", loop.path, "--offset", "1M", "--length", "4096")
    assert status == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "past the device" in err


def test_preallocate_on_ext2_says_not_allocated(make_filesystem, capsys):
    path = os.path.join(make_filesystem("ext2").path, "disk")
    status, out, _ = _run(capsys, "preallocate", path, "--size", "8M")
    assert status == 0 and "NOT allocated" in out and "EOPNOTSUPP" in out


def test_preallocate_enospc_fails_in_one_line(small_filesystem, capsys):
    path = os.path.join(small_filesystem.path, "disk")
    status, _, err = _run(capsys, "preallocate", path, "--size", "1G")
    assert status == 1
    assert len(err.strip().splitlines()) == 1 and "Not enough space" in err
    assert not os.path.exists(path)
