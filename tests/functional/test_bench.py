"""``nova-disk-tuning bench --quick`` on this machine's storage, with real qemu-img and fio.

Checks the structure of what it writes, never particular speeds: those are
the benchmark's business, not a test's.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil

import pytest
from nova_disk_tuning_bench import layouts

from nova_disk_tuning.cmd import main

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("fio") is None,
    reason="needs qemu-img (qemu-utils) and fio",
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEMO_CONF = pathlib.Path(__file__).parents[2] / "etc" / "nova-disk-tuning" / "demo.conf"


def test_bench_quick_layouts(tmp_path, capsys):
    # layouts alone keeps the test near a minute; the other experiments have
    # their own tests, and the harness treats every module alike.
    out = tmp_path / "results"
    code = main.main(
        [
            "--config-file", str(DEMO_CONF),
            "bench", "--quick", "--only", "layouts", "--json",
            "--path", str(tmp_path / "instances"), "--output", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    data = json.loads((out / "results.json").read_text())
    assert printed == data

    assert [m["name"] for m in data["modules"]] == ["layouts"]
    assert data["modules"][0]["status"] == "ok"
    assert data["machine"]["filesystem"] not in ("", "unknown")
    names = {e["name"] for e in data["experiments"]}
    assert names == {layouts.FIRST, layouts.REWRITE, layouts.FIO}

    for experiment in data["experiments"]:
        results = experiment["results"]
        variants = {r["variant"] for r in results}
        if experiment["name"] != layouts.FIO:
            # Every layout was measured, each against its libvirt-defaults cell.
            for layout in layouts.LAYOUTS:
                assert layouts.variant(layout.name, layouts.DEFAULTS) in variants
        for result in results:
            assert len(result["seconds"]) == 2  # --quick: two repetitions
            assert result["ratio"] is not None, result["variant"]
            assert math.isfinite(result["ratio"]) and result["ratio"] > 0
            assert result["how"]
        png = out / experiment["chart"]
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert png.stat().st_size > 5000

    # The policy picked one cell per layout, and the targets were evaluated.
    chosen = [r for r in data["experiments"][0]["results"] if r["chosen"]]
    assert len(chosen) == len(layouts.LAYOUTS)
    assert all(t["measured"] is not None for t in data["targets"])
    assert "(chosen)" in (out / "report.md").read_text()
    # The disks were cleaned up.
    assert list((tmp_path / "instances").iterdir()) == []
