"""The report as text: the terminal table and ``report.md``.

``report.md`` is written from the JSON document
(:func:`~nova_disk_tuning_bench.results_json.to_json`), so both always say
the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nova_disk_tuning_bench.summary import Row

TABLE_COLUMNS = ("variant (* chosen)", "median", "spread", "vs baseline", "chosen vs best")


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
    # Sorted: the same whether rendered at once or from results.json (keys sorted).
    for key, value in sorted(data["machine"].items()):
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
        lines.append("| experiment | target | variant | against | wanted | measured | met |")
        lines.append("|---|---|---|---|---|---|---|")
        for t in data["targets"]:
            measured = "not measured" if t["measured"] is None else f"{t['measured']:.2f}x"
            met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
            lines.append(
                f"| {_md_cell(t['experiment'])} | {_md_cell(t['what'])} | "
                f"{_md_cell(t['variant'])} | "
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
