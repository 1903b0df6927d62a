"""The image commands, run as an operator would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.functional.images.conftest import MiB, compare


def cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "nova.conf"
    if not config.exists():
        config.write_text(f"[DEFAULT]\ninstances_path = {tmp_path / 'instances'}\n")
    argv = [sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", str(config)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=120)


def test_convert_json(tmp_path, qcow2_image):
    dst = str(tmp_path / "out.raw")
    proc = cli(tmp_path, "convert", qcow2_image, dst, "-O", "raw", "-f", "qcow2", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["command"][:2] == ["qemu-img", "convert"] and out["command"][-1] == dst
    assert 0 < out["seconds"] < 60
    assert compare(qcow2_image, "qcow2", dst, "raw").returncode == 0


def test_convert_detects_format_and_shows_progress(tmp_path, qcow2_image):
    dst = str(tmp_path / "out.qcow2")
    proc = cli(tmp_path, "convert", qcow2_image, dst, "-O", "qcow2")
    assert proc.returncode == 0, proc.stderr
    assert "100%" in proc.stderr  # plain progress lines when not on a terminal
    # The detected format reaches qemu-img as the qcow2 driver of a json: source.
    assert '"driver": "qcow2"' in proc.stdout


def test_convert_rejects_a_lying_image(tmp_path, qcow2_image):
    dst = str(tmp_path / "out.raw")
    proc = cli(tmp_path, "convert", qcow2_image, dst, "-O", "raw", "-f", "raw")
    assert proc.returncode == 1
    assert "declared raw but its content is qcow2" in proc.stderr.splitlines()[-1]
    assert not os.path.exists(dst)


def test_image_info_and_cache_commands(tmp_path, qcow2_image):
    proc = cli(tmp_path, "image-info", qcow2_image, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["format"], info["virtual_size"]) == ("qcow2", 32 * MiB)

    from nova_disk_tuning import conf as ndt_conf
    from nova_disk_tuning.images.cache import ImageCache

    conf = ndt_conf.new_conf([str(tmp_path / "nova.conf")])
    cached = ImageCache(conf).fetch("img-1", qcow2_image, "qcow2")
    listing = json.loads(cli(tmp_path, "cache", "list", "--json").stdout)
    assert [e["path"] for e in listing["entries"]] == [cached.path]
    pruned = cli(tmp_path, "cache", "prune", "--max-age", "0", "--json")
    assert json.loads(pruned.stdout) == {"removed": [cached.path]}
    assert not os.path.exists(cached.path)
