"""Turn a benchmark run into figures people can check: rows, JSON, Markdown, PNG.

The parts, one module each:

- :mod:`~nova_disk_tuning_bench.summary`: the arithmetic (:func:`summarize`:
  median, spread, ratio against the baseline, gap to best) and the targets;
- :mod:`~nova_disk_tuning_bench.results_json`: ``results.json``;
- :mod:`~nova_disk_tuning_bench.tables`: the terminal table and ``report.md``
  (written from the JSON document, so both say the same);
- :mod:`~nova_disk_tuning_bench.charts`: one PNG chart per experiment.

:func:`write_all` writes them all; :func:`render_again` writes report.md and
the charts again from a results.json alone. The names of the parts are
importable from here too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nova_disk_tuning.common import textfile
from nova_disk_tuning_bench.charts import NO_CHARTS, chart_name, write_charts
from nova_disk_tuning_bench.harness import BenchRun
from nova_disk_tuning_bench.results_json import to_json, write_json
from nova_disk_tuning_bench.summary import (
    Row,
    Target,
    check_targets,
    experiment_names,
    summarize,
)
from nova_disk_tuning_bench.tables import (
    TABLE_COLUMNS,
    fmt_gap,
    fmt_ratio,
    fmt_value,
    markdown,
    table_rows,
)

__all__ = [
    "NO_CHARTS",
    "TABLE_COLUMNS",
    "Row",
    "Target",
    "chart_name",
    "check_targets",
    "experiment_names",
    "fmt_gap",
    "fmt_ratio",
    "fmt_value",
    "markdown",
    "render_again",
    "summarize",
    "table_rows",
    "to_json",
    "write_all",
    "write_charts",
    "write_json",
]


def write_all(
    bench: BenchRun,
    outdir: str,
    extra: Mapping[str, Any] | None = None,
    extra_markdown: Callable[[dict[str, Any]], str] | None = None,
    caption: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """results.json, report.md and the charts in ``outdir``; returns the JSON document.

    ``extra`` adds keys of an experiment's own to the document (``bench guest``:
    its per-cell ``results``); ``extra_markdown`` renders a section of report.md
    from the document, after the common part; ``caption`` a line every chart's
    title gets (``bench guest``: KVM or TCG).
    """
    os.makedirs(outdir, exist_ok=True)
    data = dict(extra or {})
    charts = write_charts(summarize(bench.results), outdir, caption(data) if caption else "")
    data = {**to_json(bench, charts), **data}
    if charts is None:
        data["notes"].append(NO_CHARTS)
    _write(data, outdir, extra_markdown)
    return data


def render_again(
    outdir: str,
    targets: Callable[[dict[str, Any]], Iterable[Target] | None] | None = None,
    extra_markdown: Callable[[dict[str, Any]], str] | None = None,
    caption: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """report.md, the charts and the checked targets of ``outdir/results.json``, written again.

    Nothing is measured: a run made before the report changed gets the
    current report. ``targets`` gives the targets to hold the run to from the
    document (None: the ones it holds). Raises OSError, InputUnreadable
    (a FIFO, a device, too large, not UTF-8), ValueError or KeyError for a
    missing or foreign results.json.
    """
    text = textfile.read_text(os.path.join(outdir, "results.json"), "benchmark results")
    data: dict[str, Any] = json.loads(text)
    rows = [Row(**entry) for experiment in data["experiments"] for entry in experiment["results"]]
    charts = write_charts(rows, outdir, caption(data) if caption else "")
    for experiment in data["experiments"]:
        experiment["chart"] = (charts or {}).get(experiment["name"])
    if charts is None and NO_CHARTS not in data["notes"]:
        data["notes"].append(NO_CHARTS)
    held = targets(data) if targets is not None else None
    if held is None:
        held = [
            Target(t["experiment"], t["against"], t["at_least"], t["what"], t["variant"])
            for t in data["targets"]
        ]
    data["targets"] = check_targets(rows, held)
    _write(data, outdir, extra_markdown)
    return data


def _write(
    data: dict[str, Any],
    outdir: str,
    extra_markdown: Callable[[dict[str, Any]], str] | None,
) -> None:
    # The text first: a document it cannot render leaves results.json as it was.
    text = markdown(data)
    more = extra_markdown(data) if extra_markdown is not None else ""
    if more:
        text += "\n" + more
    write_json(data, os.path.join(outdir, "results.json"))
    with open(os.path.join(outdir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
