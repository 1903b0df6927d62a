"""Turn a benchmark run into figures people can check: rows, JSON, Markdown, PNG.

The parts, one module each:

- :mod:`~nova_disk_tuning.bench.summary`: the arithmetic (:func:`summarize`:
  median, spread, ratio against the baseline, gap to best) and the targets;
- :mod:`~nova_disk_tuning.bench.results_json`: ``results.json``;
- :mod:`~nova_disk_tuning.bench.tables`: the terminal table and ``report.md``
  (written from the JSON document, so both say the same);
- :mod:`~nova_disk_tuning.bench.charts`: one PNG chart per experiment.

:func:`write_all` writes them all; the names of the parts are importable
from here too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from nova_disk_tuning.bench.charts import NO_CHARTS, chart_name, write_charts
from nova_disk_tuning.bench.harness import BenchRun
from nova_disk_tuning.bench.results_json import to_json, write_json
from nova_disk_tuning.bench.summary import (
    Row,
    Target,
    check_targets,
    experiment_names,
    summarize,
)
from nova_disk_tuning.bench.tables import (
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
) -> dict[str, Any]:
    """results.json, report.md and the charts in ``outdir``; returns the JSON document.

    ``extra`` adds keys of an experiment's own to the document (``bench guest``:
    its per-cell ``results``); ``extra_markdown`` renders a section of report.md
    from the document, after the common part.
    """
    os.makedirs(outdir, exist_ok=True)
    charts = write_charts(summarize(bench.results), outdir)
    data = to_json(bench, charts)
    if charts is None:
        data["notes"].append(NO_CHARTS)
    data.update(extra or {})
    write_json(data, os.path.join(outdir, "results.json"))
    text = markdown(data)
    if extra_markdown is not None:
        text += "\n" + extra_markdown(data)
    with open(os.path.join(outdir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return data
