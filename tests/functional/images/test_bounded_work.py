"""Work on an image is bounded: by the virtual size it may claim, and by CPU time.

The hostile image is the one from the field: a 40 MB qcow2 (2 MiB clusters)
claiming 2 EiB, whose conversion walks the empty virtual size for hours.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.images import qemu_img_convert
from nova_disk_tuning.images.cache import ImageCache
from nova_disk_tuning.images.inspection import ImageSafety
from nova_disk_tuning.images.qemu_img import QemuImg
from tests.functional.conftest import requires_root
from tests.functional.images.conftest import MiB, run


@pytest.fixture(scope="module")
def huge_claim(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("huge") / "2eib.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", path, "2E")
    assert os.path.getsize(path) < 64 * MiB
    return path


def test_convert_refuses_a_virtual_size_above_the_ceiling_at_once(tmp_path, huge_claim):
    config = tmp_path / "nova.conf"
    config.write_text(f"[DEFAULT]\ninstances_path = {tmp_path / 'instances'}\n")
    dst = tmp_path / "out.raw"
    argv = [sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", str(config)]
    proc = subprocess.run(
        [*argv, "convert", huge_claim, str(dst), "-O", "raw"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert "max_image_virtual_size_gb (16384 GiB)" in line and huge_claim in line
    assert not dst.exists() and os.listdir(tmp_path) == ["nova.conf"]


def test_the_cache_refuses_it_too(conf, huge_claim):
    with pytest.raises(exception.ImageUnacceptable, match="max_image_virtual_size_gb"):
        ImageCache(conf).fetch("huge", huge_claim, "qcow2")
    assert [n for n in os.listdir(ImageCache(conf).base_dir)] == []


def test_a_lower_ceiling_is_the_operators_choice(make_conf, qcow2_image):
    conf = make_conf(disk_tuning={"max_image_virtual_size_gb": 1})
    assert ImageSafety.from_conf(conf).check(qcow2_image, None).virtual_size == 32 * MiB


def test_cpu_limit_is_proportional_to_what_the_source_allocates(make_conf, qcow2_image):
    qemu_img = QemuImg(make_conf(disk_tuning={"convert_cpu_time_per_gib": 1024}))
    allocated = os.stat(qcow2_image).st_blocks * 512
    limit = qemu_img.cpu_limit(qcow2_image)
    assert limit is not None and limit.allocated == allocated
    assert limit.seconds == qemu_img_convert.CPU_FLOOR_SECONDS + -(-allocated // MiB)
    off = QemuImg(make_conf(disk_tuning={"convert_cpu_time_per_gib": 0}))
    assert off.cpu_limit(qcow2_image) is None


@requires_root
def test_a_conversion_past_its_cpu_limit_is_stopped(
    make_conf, make_filesystem, huge_claim, monkeypatch
):
    """With the ceiling raised, the walk runs into the CPU limit instead (xfs, as reported)."""
    conf = make_conf(
        disk_tuning={"max_image_virtual_size_gb": 4 << 30, "convert_cpu_time_per_gib": 1}
    )
    # The floor is what makes the limit 1 s here rather than a minute.
    monkeypatch.setattr(qemu_img_convert, "CPU_FLOOR_SECONDS", 0)
    dst = os.path.join(make_filesystem("xfs").path, "out.raw")
    with (
        ImageSafety.from_conf(conf).checked(huge_claim, "qcow2") as image,
        pytest.raises(exception.ConvertLimitExceeded, match="1 CPU seconds") as caught,
    ):
        QemuImg(conf).convert(image, dst, "qcow2", "raw", preallocation="none")
    assert "convert_cpu_time_per_gib" in str(caught.value) and huge_claim in str(caught.value)
    assert not os.path.exists(dst)
