"""The arithmetic of a benchmark report, in one place: rows and targets.

:func:`summarize` turns results into rows: the median of the repetitions,
their spread ((max - min) / median), the ratio against the variant's
baseline (> 1 means faster, whatever the unit) and, for the variant the
plugin's policy picks, how far it is from the best variant it was measured
against ("gap to best"). :func:`check_targets` says whether the claims an
experiment makes (its ``TARGETS``) held in the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from nova_disk_tuning_bench import model
from nova_disk_tuning_bench.model import Result


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
