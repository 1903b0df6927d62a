"""The report's arithmetic on synthetic results: median, spread, ratio, gap to best."""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys

import pytest
from nova_disk_tuning_bench import harness, report
from nova_disk_tuning_bench.model import Result

from nova_disk_tuning.cmd import main


def _result(variant: str, seconds: list[float], **kwargs) -> Result:
    kwargs.setdefault("experiment", "exp/a")
    kwargs.setdefault("how", f"run {variant}")
    return Result(variant=variant, seconds=seconds, **kwargs)


def _rows(*results: Result) -> dict[str, report.Row]:
    return {row.variant: row for row in report.summarize(results)}


def test_median_and_spread_of_repetitions():
    rows = _rows(_result("v", [3.0, 1.0, 2.0, 10.0]))
    assert rows["v"].median == pytest.approx(2.5)
    assert rows["v"].spread == pytest.approx((10.0 - 1.0) / 2.5)
    assert rows["v"].n == 4


def test_single_repetition_has_no_spread():
    assert _rows(_result("v", [4.0]))["v"].spread == 0.0


def test_time_ratio_is_baseline_over_variant():
    rows = _rows(
        _result("base", [4.0, 4.0, 4.0]),
        _result("fast", [1.0, 2.0, 1.0], baseline="base"),
        _result("slow", [8.0, 8.0, 8.0], baseline="base"),
    )
    assert rows["fast"].ratio == pytest.approx(4.0)
    assert rows["slow"].ratio == pytest.approx(0.5)
    assert rows["base"].ratio == 1.0
    assert rows["base"].is_baseline and not rows["fast"].is_baseline


def test_rate_ratio_is_variant_over_baseline():
    rows = _rows(
        _result("base", [1000.0], unit="iops"),
        _result("more", [3000.0], unit="iops", baseline="base"),
    )
    assert rows["more"].ratio == pytest.approx(3.0)


def test_baselines_are_per_experiment():
    rows = report.summarize(
        [
            _result("base", [1.0], experiment="exp/a"),
            _result("base", [10.0], experiment="exp/b"),
            _result("x", [5.0], experiment="exp/b", baseline="base"),
        ]
    )
    x = next(r for r in rows if r.variant == "x")
    assert x.ratio == pytest.approx(2.0)


def test_missing_baseline_gives_no_ratio():
    rows = _rows(_result("orphan", [1.0], baseline="gone"), _result("alone", [1.0]))
    assert rows["orphan"].ratio is None
    assert rows["alone"].ratio is None  # nobody compares with it, it compares with nobody


def test_results_without_timings_are_left_out():
    assert report.summarize([_result("empty", [])]) == []


def test_gap_of_chosen_to_best_in_its_group():
    rows = _rows(
        _result("g1 default", [2.0]),
        _result("g1 picked", [1.5], baseline="g1 default", chosen=True),
        _result("g1 best", [1.0], baseline="g1 default"),
        # Another group's faster variant must not count.
        _result("g2 default", [0.1]),
    )
    assert rows["g1 picked"].gap_to_best == pytest.approx(0.5)
    assert rows["g1 picked"].best == "g1 best"
    assert rows["g1 best"].gap_to_best is None  # not chosen


def test_chosen_best_has_zero_gap():
    rows = _rows(_result("d", [2.0]), _result("c", [1.0], baseline="d", chosen=True))
    assert rows["c"].gap_to_best == 0.0
    assert report.fmt_gap(rows["c"]) == "best"


def test_targets_met_not_met_and_unmeasured():
    rows = report.summarize(
        [
            _result("space", [4.0]),
            _result("perf", [1.0], baseline="space"),
            _result("default", [1.0]),
            _result("tuned", [0.8], baseline="default", chosen=True),
        ]
    )
    checked = report.check_targets(
        rows,
        [
            report.Target("exp/a", against="space", variant="perf", at_least=4.0, what="t1"),
            report.Target("exp/a", against="default", at_least=2.0, what="t2"),
            report.Target("exp/a", against="nothing", variant="perf", at_least=1.0, what="t3"),
        ],
    )
    assert [c["met"] for c in checked] == [True, False, None]
    assert checked[0]["measured"] == pytest.approx(4.0)
    assert checked[1]["variant"] == "tuned"
    assert checked[1]["measured"] == pytest.approx(1.25)


def _bench_run(results: list[Result]) -> harness.BenchRun:
    return harness.BenchRun(
        date="2024-01-01T00:00:00+00:00",
        quick=True,
        repeat=2,
        path="/srv/instances",
        machine={"cpu": "test cpu", "kernel": "6.1", "filesystem": "ext4", "qemu-img": "7.2"},
        experiments=[
            harness.ExperimentRun(
                name="layouts", module="m", status="ok", results=results, notes=["io_uring: no"]
            ),
            harness.ExperimentRun(name="storage", module="s", status="unavailable"),
        ],
        notes=["not root"],
    )


def test_json_and_markdown_say_the_same(tmp_path):
    bench = _bench_run(
        [
            _result("default", [2.0, 2.2]),
            _result("tuned|x", [1.0, 1.1], baseline="default", chosen=True),
        ]
    )
    data = report.write_all(bench, str(tmp_path))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(data))
    (experiment,) = on_disk["experiments"]
    assert experiment["name"] == "exp/a" and experiment["module"] == "layouts"
    tuned = experiment["results"][1]
    assert math.isclose(tuned["ratio"], 2.1 / 1.05)
    assert on_disk["notes"] == ["not root", "io_uring: no"]
    assert [m["status"] for m in on_disk["modules"]] == ["ok", "unavailable"]

    markdown = (tmp_path / "report.md").read_text()
    assert "| ext4 |" in markdown
    # The chosen cell is marked, and a | in a name cannot break the table.
    assert "**tuned\\|x** (chosen)" in markdown
    assert "2.00x vs default" in markdown
    assert "- not root" in markdown

    png = tmp_path / experiment["chart"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


def test_markdown_targets_name_their_experiment():
    data = {
        "date": "d", "quick": True, "repeat": 1, "path": "/p", "machine": {}, "notes": [],
        "modules": [], "experiments": [],
        "targets": [{"what": "pick within 10%", "experiment": "guest/raw-sparse/randread",
                     "variant": "pick", "against": "nova", "at_least": 0.9, "measured": 0.5,
                     "met": False}],
    }  # fmt: skip
    row = next(line for line in report.markdown(data).splitlines() if "pick within" in line)
    assert row.startswith("| guest/raw-sparse/randread | pick within 10% | pick | nova |")
    assert row.endswith("| >= 0.9x | 0.50x | **no** |")


def test_chart_names_are_file_names():
    assert report.chart_name("layouts/first-write") == "layouts_first-write.png"
    assert "/" not in report.chart_name("a/b c/d")


def test_without_matplotlib_table_and_json_still_written(tmp_path, monkeypatch):
    # None in sys.modules makes `import matplotlib` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    bench = _bench_run(
        [_result("default", [2.0, 2.2]), _result("tuned", [1.0], baseline="default")]
    )
    data = report.write_all(bench, str(tmp_path))
    assert report.NO_CHARTS in data["notes"]
    assert "nova-disk-tuning[bench]" in report.NO_CHARTS
    assert json.loads((tmp_path / "results.json").read_text())["experiments"][0]["chart"] is None
    assert "| default |" in (tmp_path / "report.md").read_text()
    assert not list(tmp_path.glob("*.png"))


def test_runtime_requirements_leave_the_benchmarks_and_matplotlib_to_the_bench_extra():
    requires = importlib.metadata.requires("nova-disk-tuning") or []
    assert not [r for r in requires if r.lower().startswith("matplotlib")], requires
    bench = [r for r in requires if r.lower().startswith("nova-disk-tuning-bench")]
    assert bench and all('extra == "bench"' in r for r in bench), bench
    charts = importlib.metadata.requires("nova-disk-tuning-bench") or []
    assert [r for r in charts if r.lower().startswith("matplotlib")], charts


def _written(tmp_path) -> tuple[str, dict]:
    return (tmp_path / "report.md").read_text(), json.loads((tmp_path / "results.json").read_text())


def test_render_again_writes_the_same_report_from_results_json(tmp_path):
    bench = _bench_run(
        [_result("default", [2.0, 2.2]), _result("tuned", [1.0, 1.1], baseline="default")]
    )
    bench.experiments[0].targets = [report.Target("exp/a", "default", 1.5, "tuned 1.5x", "tuned")]
    report.write_all(bench, str(tmp_path))
    before = _written(tmp_path)
    (tmp_path / "report.md").unlink()
    for png in tmp_path.glob("*.png"):
        png.unlink()
    data = report.render_again(str(tmp_path))
    assert _written(tmp_path) == before
    assert data["targets"][0]["met"] is True
    assert (tmp_path / before[1]["experiments"][0]["chart"]).stat().st_size > 5000


def test_render_again_holds_the_run_to_new_targets(tmp_path):
    bench = _bench_run(
        [_result("default", [2.0, 2.2]), _result("tuned", [1.0, 1.1], baseline="default")]
    )
    report.write_all(bench, str(tmp_path))
    stricter = [report.Target("exp/a", "default", 3.0, "tuned 3x", "tuned")]
    data = report.render_again(
        str(tmp_path), targets=lambda d: stricter, extra_markdown=lambda d: "## More\n"
    )
    assert [(t["what"], t["met"]) for t in data["targets"]] == [("tuned 3x", False)]
    text, on_disk = _written(tmp_path)
    assert "| exp/a | tuned 3x | tuned | default | >= 3x | 2.00x | **no** |" in text
    assert text.endswith("\n## More\n")
    assert on_disk["targets"] == data["targets"]


@pytest.mark.parametrize("content", [None, "{not json", '{"experiments": 1}'])
def test_render_cli_refuses_what_is_not_a_run_in_one_line(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    (tmp_path / "nova.conf").write_text(f"[DEFAULT]\ninstances_path = {tmp_path}\n")
    rc = main.main(
        ["--config-file", str(tmp_path / "nova.conf"), "bench", "--render", str(tmp_path)]
    )
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert f"cannot render {tmp_path}/results.json" in err
    assert "Traceback" not in err
    assert not (tmp_path / "report.md").exists()
