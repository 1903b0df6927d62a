"""What every benchmark experiment reports: one record per variant.

Experiments run their variants side by side in one run (interleaved
repetitions, so a noisy neighbour hurts every variant alike) and report the
raw timings; the report computes medians, spread and ratios against the
baseline variant.
"""

from __future__ import annotations

import dataclasses
import statistics


@dataclasses.dataclass
class Result:
    experiment: str  # e.g. "conversion/qcow2-random-2G"
    variant: str  # e.g. "ours", "nova", "writethrough"
    how: str  # the exact command or call that was timed
    seconds: list[float]  # one entry per repetition
    baseline: str | None = None  # the variant this one is compared with
    nbytes: int | None = None  # bytes processed, for throughput
    chosen: bool = False  # the variant this plugin's policy picks
    unit: str = "s"  # what `seconds` measures ("s" or e.g. "iops")

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repetitions were."""
        if len(self.seconds) < 2 or not self.median:
            return 0.0
        return (max(self.seconds) - min(self.seconds)) / self.median

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.update(median=self.median, spread=self.spread)
        return data


def ratio(result: Result, baseline: Result) -> float:
    """How many times faster ``result`` is than ``baseline`` (> 1 is faster)."""
    if result.unit == "s":
        return baseline.median / result.median
    return result.median / baseline.median
