"""The report as data: ``results.json``, what every other form is made from."""

from __future__ import annotations

import json
import math
from typing import Any

from nova_disk_tuning_bench.harness import BenchRun
from nova_disk_tuning_bench.summary import check_targets, experiment_names, summarize


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
