"""The report as pictures: one PNG bar chart per experiment (matplotlib, optional)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from nova_disk_tuning_bench.summary import Row, experiment_names


def chart_name(experiment: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("_") + ".png"


NO_CHARTS = "matplotlib is not installed, so no charts: install nova-disk-tuning[bench] for charts"


def write_charts(rows: Sequence[Row], outdir: str, caption: str = "") -> dict[str, str] | None:
    """One horizontal bar chart per experiment: median, min-max whiskers.

    ``caption`` goes under every title (how the run was made, e.g. KVM or TCG).

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
        title = f"{name}  (green: chosen, grey: baseline)"
        axes.set_title(title + (f"\n{caption}" if caption else ""), fontsize=10)
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
