"""The storage benchmark's plumbing (the measurements themselves are not tests)."""

from __future__ import annotations

from nova_disk_tuning_bench import primitives as bench
from nova_disk_tuning_bench.model import Result


def test_repetitions_are_interleaved():
    order: list[str] = []
    seconds = bench.interleave(
        {"ours": lambda: order.append("ours"), "dd": lambda: order.append("dd")}, 3
    )
    assert order == ["ours", "dd"] * 3
    assert {k: len(v) for k, v in seconds.items()} == {"ours": 3, "dd": 3}


def test_table_shows_the_ratio_against_the_baseline():
    results = [
        Result("storage/x", "ours", "call", [0.01, 0.02, 0.03], baseline="dd", chosen=True),
        Result("storage/x", "dd", "dd ...", [2.0, 2.0, 2.0]),
    ]
    text = bench.format_results(results)
    ours_line = next(line for line in text.splitlines() if " ours " in line)
    assert "100.0" in ours_line and "n=3" in ours_line
