"""Turn a benchmark run into figures people can check: rows, JSON, Markdown, PNG.

The arithmetic is in one place (:func:`summarize`): the median of the
repetitions, their spread ((max - min) / median), the ratio against the
variant's baseline (> 1 means faster, whatever the unit) and, for the
variant the plugin's policy picks, how far it is from the best variant it
was measured against ("gap to best").
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from nova_disk_tuning.bench import model
from nova_disk_tuning.bench.harness import BenchRun
from nova_disk_tuning.bench.model import Result


@dataclasses.dataclass(frozen=True)
class Target:
    """A claim from the issues, checked against the run: ``variant`` >= ``at_least`` x ``against``.

    ``variant=None`` means the variant the policy chose among those compared
    with ``against``.
    """

    experiment: str
    against: str
    at_least: float
    what: str
    variant: str | None = None


@dataclasses.dataclass
class Row:
    experiment: str
    variant: str
    unit: str
    median: float
    spread: float
    n: int
    baseline: str | None
    ratio: float | None  # vs baseline; 1.0 for a baseline itself
    chosen: bool
    is_baseline: bool
    gap_to_best: float | None  # chosen rows: how much faster the best compared variant is
    best: str | None
    how: str
    seconds: list[float]
    nbytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _group(result: Result) -> str:
    # Variants compared with the same baseline form one group (the baseline too).
    return result.baseline or result.variant


def _faster(a: Result, b: Result) -> bool:
    return model.ratio(a, b) > 1.0


def summarize(results: Iterable[Result]) -> list[Row]:
    """One row per result, in the order given, with ratio and gap to best."""
    results = list(results)
    by_key = {(r.experiment, r.variant): r for r in results}
    baselines = {(r.experiment, r.baseline) for r in results if r.baseline}
    groups: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        if result.seconds:
            groups.setdefault((result.experiment, _group(result)), []).append(result)

    rows = []
    for result in results:
        if not result.seconds:
            continue
        is_baseline = (result.experiment, result.variant) in baselines
        base = by_key.get((result.experiment, result.baseline)) if result.baseline else None
        if base is not None and base.seconds and base.median > 0 and result.median > 0:
            ratio: float | None = model.ratio(result, base)
        elif is_baseline and result.baseline is None:
            ratio = 1.0
        else:
            ratio = None
        gap = best_name = None
        if result.chosen:
            peers = groups.get((result.experiment, _group(result)), [result])
            best = result
            for peer in peers:
                if peer.median > 0 and _faster(peer, best):
                    best = peer
            if result.median > 0 and best.median > 0:
                gap = model.ratio(best, result) - 1.0
                best_name = best.variant
        rows.append(
            Row(
                experiment=result.experiment,
                variant=result.variant,
                unit=result.unit,
                median=result.median,
                spread=result.spread,
                n=len(result.seconds),
                baseline=result.baseline,
                ratio=ratio,
                chosen=result.chosen,
                is_baseline=is_baseline,
                gap_to_best=gap,
                best=best_name,
                how=result.how,
                seconds=list(result.seconds),
                nbytes=result.nbytes,
            )
        )
    return rows


def check_targets(rows: Sequence[Row], targets: Iterable[Target]) -> list[dict[str, Any]]:
    """Each target with the measured ratio and whether it was met (None: not measured)."""
    checked = []
    for target in targets:
        against = _find(rows, target.experiment, target.against)
        if target.variant is None:
            chosen = [
                r
                for r in rows
                if r.experiment == target.experiment
                and r.chosen
                and (r.baseline == target.against or r.variant == target.against)
            ]
            row = chosen[0] if chosen else None
        else:
            row = _find(rows, target.experiment, target.variant)
        measured = None
        if row is not None and against is not None and row.median > 0 and against.median > 0:
            measured = (
                against.median / row.median if row.unit == "s" else row.median / against.median
            )
        checked.append(
            {
                "what": target.what,
                "experiment": target.experiment,
                "variant": row.variant if row else target.variant or "(the chosen cell)",
                "against": target.against,
                "at_least": target.at_least,
                "measured": measured,
                "met": None if measured is None else measured >= target.at_least,
            }
        )
    return checked


def _find(rows: Sequence[Row], experiment: str, variant: str) -> Row | None:
    for row in rows:
        if row.experiment == experiment and row.variant == variant:
            return row
    return None


def experiment_names(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(r.experiment for r in rows))


def chart_name(experiment: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("_") + ".png"


# -- formatting -----------------------------------------------------------------


def fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:,.0f} {unit}"


def fmt_ratio(row: Row) -> str:
    if row.ratio is None:
        return "-"
    if row.is_baseline and row.baseline is None:
        return "1.00x (baseline)"
    return f"{row.ratio:.2f}x"


def fmt_gap(row: Row) -> str:
    if row.gap_to_best is None:
        return ""
    if row.gap_to_best <= 0.0:
        return "best"
    return f"best is {row.gap_to_best:+.0%} ({row.best})"


def table_rows(rows: Sequence[Row], experiment: str) -> list[list[str]]:
    """Rows for a terminal table (the commands are in report.md: too wide here)."""
    out = []
    for row in rows:
        if row.experiment != experiment:
            continue
        mark = "*" if row.chosen else ""
        out.append(
            [
                f"{mark}{row.variant}",
                fmt_value(row.median, row.unit),
                f"{row.spread:.0%} (n={row.n})",
                fmt_ratio(row),
                fmt_gap(row),
            ]
        )
    return out


TABLE_COLUMNS = ("variant (* chosen)", "median", "spread", "vs baseline", "chosen vs best")


# -- JSON -------------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def to_json(bench: BenchRun, charts: dict[str, str] | None = None) -> dict[str, Any]:
    rows = summarize(bench.results)
    targets = [t for e in bench.experiments for t in e.targets]
    experiments = []
    for name in experiment_names(rows):
        module = next(
            e.name for e in bench.experiments if any(r.experiment == name for r in e.results)
        )
        entries = []
        for row in rows:
            if row.experiment != name:
                continue
            data = row.to_dict()
            data["ratio"] = _finite(row.ratio)
            data["gap_to_best"] = _finite(row.gap_to_best)
            entries.append(data)
        experiments.append(
            {
                "name": name,
                "module": module,
                "chart": (charts or {}).get(name),
                "results": entries,
            }
        )
    return {
        "date": bench.date,
        "quick": bench.quick,
        "repeat": bench.repeat,
        "path": bench.path,
        "machine": bench.machine,
        "notes": bench.notes + [n for e in bench.experiments for n in e.notes],
        "modules": [
            {
                "name": e.name,
                "module": e.module,
                "status": e.status,
                "error": e.error,
                "elapsed": round(e.elapsed, 3),
                "notes": e.notes,
            }
            for e in bench.experiments
        ],
        "experiments": experiments,
        "targets": check_targets(rows, targets),
    }


def write_json(data: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


# -- Markdown ---------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(data: dict[str, Any]) -> str:
    """report.md from the JSON document, so both always say the same thing."""
    lines = [f"# nova-disk-tuning bench ({'quick' if data['quick'] else 'full'})", ""]
    lines.append(f"Date: {data['date']}. Repetitions: {data['repeat']}, interleaved.")
    lines.append(f"Work directory: `{data['path']}`.")
    lines.append("")
    lines.append("| machine | |")
    lines.append("|---|---|")
    for key, value in data["machine"].items():
        lines.append(f"| {key} | {_md_cell(str(value))} |")
    lines.append("")
    lines.append(
        "Median of the repetitions; spread = (max - min) / median; ratio > 1 means faster "
        "than the baseline (time: baseline / variant; rates: variant / baseline). "
        "**Bold** marks the cell this plugin's policy picks; *chosen vs best* says how much "
        "faster the best variant of its group was."
    )
    lines.append("")
    if data["notes"]:
        lines.append("## Not measured, and warnings")
        lines.append("")
        lines.extend(f"- {_md_cell(n)}" for n in data["notes"])
        lines.append("")
    failed = [m for m in data["modules"] if m["status"] == "failed"]
    for module in failed:
        lines.append(f"**{module['name']} failed**: {_md_cell(module['error'] or '')}")
        lines.append("")
    if data["targets"]:
        lines.append("## Targets")
        lines.append("")
        lines.append("| target | variant | against | wanted | measured | met |")
        lines.append("|---|---|---|---|---|---|")
        for t in data["targets"]:
            measured = "not measured" if t["measured"] is None else f"{t['measured']:.2f}x"
            met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
            lines.append(
                f"| {_md_cell(t['what'])} | {_md_cell(t['variant'])} | "
                f"{_md_cell(t['against'])} | >= {t['at_least']:g}x | {measured} | {met} |"
            )
        lines.append("")
    for experiment in data["experiments"]:
        lines.append(f"## {experiment['name']}")
        lines.append("")
        if experiment.get("chart"):
            lines.append(f"![{experiment['name']}]({experiment['chart']})")
            lines.append("")
        lines.append("| variant | median | spread | ratio vs baseline | chosen vs best | how |")
        lines.append("|---|---|---|---|---|---|")
        for entry in experiment["results"]:
            row = Row(**entry)
            variant = _md_cell(row.variant)
            if row.chosen:
                variant = f"**{variant}** (chosen)"
            ratio = fmt_ratio(row)
            if row.baseline and row.ratio is not None:
                ratio += f" vs {_md_cell(row.baseline)}"
            lines.append(
                f"| {variant} | {fmt_value(row.median, row.unit)} | "
                f"{row.spread:.0%} (n={row.n}) | {ratio} | {_md_cell(fmt_gap(row))} | "
                f"`{_md_cell(row.how)}` |"
            )
        lines.append("")
    return "\n".join(lines)


# -- charts -------------------------------------------------------------------------


NO_CHARTS = "matplotlib is not installed, so no charts: install nova-disk-tuning[bench] for charts"


def write_charts(rows: Sequence[Row], outdir: str) -> dict[str, str] | None:
    """One horizontal bar chart per experiment: median, min-max whiskers.

    Returns {experiment: file name relative to ``outdir``}, or None without
    matplotlib: it is the ``bench`` extra, not a compute-node dependency.
    """
    try:
        import matplotlib
    except ImportError:
        return None

    matplotlib.use("Agg")  # no display on a compute host
    from matplotlib import pyplot

    charts = {}
    for name in experiment_names(rows):
        mine = [r for r in rows if r.experiment == name]
        labels = [("* " if r.chosen else "") + r.variant for r in mine]
        medians = [r.median for r in mine]
        low = [r.median - min(r.seconds) for r in mine]
        high = [max(r.seconds) - r.median for r in mine]
        colours = [
            "tab:green" if r.chosen else "tab:grey" if r.is_baseline else "tab:blue" for r in mine
        ]
        figure, axes = pyplot.subplots(figsize=(9, 1.2 + 0.35 * len(mine)))
        positions = list(range(len(mine)))
        axes.barh(positions, medians, xerr=[low, high], color=colours, capsize=3)
        axes.set_yticks(positions, labels, fontsize=8)
        axes.invert_yaxis()
        unit = mine[0].unit
        better = "lower is better" if unit == "s" else "higher is better"
        axes.set_xlabel(f"median {unit} ({better}); whiskers: min-max of {mine[0].n} runs")
        axes.set_title(f"{name}  (green: chosen, grey: baseline)", fontsize=10)
        for position, row in zip(positions, mine, strict=True):
            if row.ratio is not None and not row.is_baseline:
                # Right of the whisker, so the label never sits on it.
                axes.annotate(
                    f" {row.ratio:.2f}x",
                    (max(row.seconds), position),
                    va="center",
                    fontsize=7,
                )
        figure.tight_layout()
        filename = chart_name(name)
        figure.savefig(os.path.join(outdir, filename), dpi=100)
        pyplot.close(figure)
        charts[name] = filename
    return charts


def write_all(bench: BenchRun, outdir: str) -> dict[str, Any]:
    """results.json, report.md and the charts in ``outdir``; returns the JSON document."""
    os.makedirs(outdir, exist_ok=True)
    charts = write_charts(summarize(bench.results), outdir)
    data = to_json(bench, charts)
    if charts is None:
        data["notes"].append(NO_CHARTS)
    write_json(data, os.path.join(outdir, "results.json"))
    with open(os.path.join(outdir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(data))
    return data
