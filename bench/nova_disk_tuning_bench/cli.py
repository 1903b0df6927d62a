"""``nova-disk-tuning bench``: measure the plugin's choices against Nova's and libvirt's.

Runs the experiments side by side (interleaved repetitions), prints a table
per experiment and writes results.json, report.md and one PNG chart per
experiment into ``--output``. ``bench guest`` (:mod:`.cli_guest`) measures
inside a guest instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.cmd import common
from nova_disk_tuning_bench import cli_guest, harness, report
from nova_disk_tuning_bench.guest import report as guest_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="Benchmark disk layouts, conversion and zeroing against baselines.",
        description=(
            "Run the benchmark experiments side by side against the baselines Nova and "
            "plain libvirt would use, and report medians, spread and ratios."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"Smaller sizes and {harness.QUICK_REPEAT} repetitions (about 2 minutes).",
    )
    parser.add_argument(
        "--path",
        metavar="DIR",
        help="Where the test disks are made (default: [DEFAULT] instances_path); "
        "the figures are those of this file system.",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        default="bench-results",
        help="Directory for results.json, report.md and the charts (default: %(default)s).",
    )
    parser.add_argument(
        "--json", action="store_true", help="Print results.json on stdout instead of tables."
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=list(harness.EXPERIMENTS),
        help=f"Run only these experiments ({', '.join(harness.EXPERIMENTS)}).",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help=f"Repetitions per variant (default: {harness.FULL_REPEAT}, "
        f"{harness.QUICK_REPEAT} with --quick).",
    )
    parser.add_argument(
        "--render",
        metavar="DIR",
        help="Measure nothing: write report.md, the charts and the targets again from "
        "DIR/results.json (a run made before the report changed).",
    )
    parser.set_defaults(func=handler)
    # `bench guest`: its own options; plain `bench` runs the host-side experiments.
    experiments = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    cli_guest.register(experiments)


def handler(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    if args.render:
        return _render(args.render)
    if args.repeat is not None and args.repeat < 1:
        print("nova-disk-tuning bench: --repeat must be at least 1", file=sys.stderr)
        return 2
    names = args.only or list(harness.EXPERIMENTS)
    with common.progress(f"bench ({', '.join(names)})", enabled=True) as update:
        bench = harness.run(
            conf,
            path=args.path,
            names=names,
            quick=args.quick,
            repeat=args.repeat,
            progress=update,
        )
    data = report.write_all(bench, args.output)
    if args.json:
        common.print_json(data)
        if report.NO_CHARTS in data["notes"]:
            print(f"note: {report.NO_CHARTS}", file=sys.stderr)
    else:
        _print_tables(data)
        charts = "" if report.NO_CHARTS in data["notes"] else " and charts"
        print(f"Report: {os.path.join(args.output, 'report.md')}, results.json{charts} there.")
    return 1 if bench.failed else 0


def _render(outdir: str) -> int:
    try:
        data = report.render_again(
            outdir,
            targets=lambda d: guest_report.targets(d["results"]) if "guest" in d else None,
            extra_markdown=lambda d: guest_report.markdown(d) if "guest" in d else "",
            caption=lambda d: guest_report.caption(d) if "guest" in d else "",
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except exception.InputUnreadable as exc:
        reason = str(exc.kwargs["reason"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = f"not the results.json of a bench run ({type(exc).__name__}: {exc})"
    else:
        missed = sum(1 for t in data["targets"] if t["met"] is False)
        print(
            f"Report: {os.path.join(outdir, 'report.md')} written again "
            f"({len(data['targets'])} targets, {missed} not met)."
        )
        return 0
    where = os.path.join(outdir, "results.json")
    print(
        f"nova-disk-tuning bench: cannot render {where}: {reason}; "
        "give the --output directory of a bench run",
        file=sys.stderr,
    )
    return 1


def _print_tables(data: dict) -> None:
    machine = data["machine"]
    print(
        f"{machine['cpu']} x{machine['cpus']}, Linux {machine['kernel']}, "
        f"{machine['filesystem']} at {data['path']}, qemu-img {machine['qemu-img']}"
    )
    for experiment in data["experiments"]:
        rows = [report.Row(**entry) for entry in experiment["results"]]
        common.print_table(
            experiment["name"], report.TABLE_COLUMNS, report.table_rows(rows, experiment["name"])
        )
    for target in data["targets"]:
        measured = "not measured" if target["measured"] is None else f"{target['measured']:.2f}x"
        verdict = {True: "met", False: "NOT met", None: "-"}[target["met"]]
        print(
            f"target: {target['what']}: {measured} (wanted >= {target['at_least']:g}x): {verdict}"
        )
    for module in data["modules"]:
        if module["status"] == "failed":
            print(f"{module['name']} FAILED: {module['error']}", file=sys.stderr)
    for note in data["notes"]:
        print(f"note: {note}", file=sys.stderr)
