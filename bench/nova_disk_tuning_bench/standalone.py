"""Run one experiment module on its own: ``python -m nova_disk_tuning_bench.NAME WORKDIR``.

``nova-disk-tuning bench`` runs them all and writes the full report; this is
for iterating on one experiment.
"""

from __future__ import annotations

import argparse
import json
import logging  # stdlib: only to configure this script's output (modules log through oslo_log)
import sys
from collections.abc import Callable, Sequence

from nova_disk_tuning_bench.model import Result

Run = Callable[..., list[Result]]
Report = Callable[[list[Result]], str]


def main(doc: str, run: Run, report: Report, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("workdir", help="Where the experiment makes its files.")
    parser.add_argument("--quick", action="store_true", help="Smaller sizes.")
    parser.add_argument("--repeat", type=int, default=3, help="Repetitions per variant.")
    parser.add_argument("--json", metavar="FILE", help="Also write the results as JSON.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    results = run(args.workdir, quick=args.quick, repeat=args.repeat)
    print(report(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([r.to_dict() for r in results], handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit("run an experiment module instead, e.g. python -m nova_disk_tuning_bench.primitives")
