"""``nova-disk-tuning bench guest``: fio inside a real guest, per layout and variant.

Boots a small guest (Debian's kernel, busybox and the host's fio) on a
private libvirtd with QEMU under TCG, once per layout x variant x
repetition, runs the fio jobs in it on a data disk the plugin's image
backends made, and reports IOPS medians, min-max and ratios against
libvirt's defaults and Nova's XML, with fio on the host as the bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.cmd import common
from nova_disk_tuning.common.units import compact_size, parse_size
from nova_disk_tuning_bench import report
from nova_disk_tuning_bench.guest import cpu, jobs, matrix
from nova_disk_tuning_bench.guest import errors as guest_errors
from nova_disk_tuning_bench.guest import report as guest_report
from nova_disk_tuning_bench.guest import run as guest_run

QUICK, FULL = guest_run.QUICK, guest_run.FULL


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "guest",
        help="Benchmark disk settings inside a guest (root; private libvirtd, QEMU TCG).",
        description=(
            "Boot a small guest on a private libvirtd (QEMU under TCG) once per layout x "
            "variant x repetition, run fio jobs in it on a data disk the plugin's image "
            "backends made, and report IOPS medians, min-max and ratios against libvirt's "
            "defaults and Nova's XML, with fio on the host as the bound. Needs root."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"One layout ({', '.join(QUICK.layouts)}), variants {', '.join(QUICK.variants)}, "
        f"{QUICK.timing.runtime} s jobs, {QUICK.repeat} repetitions (a few minutes).",
    )
    parser.add_argument(
        "--path",
        metavar="DIR",
        help="Where the disks and the private libvirtd live (default: [DEFAULT] instances_path).",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        default="bench-results/guest",
        help="Directory for results.json, report.md and the charts (default: %(default)s).",
    )
    parser.add_argument(
        "--json", action="store_true", help="Print results.json on stdout instead of tables."
    )
    parser.add_argument(
        "--layouts",
        nargs="+",
        metavar="NAME",
        choices=matrix.LAYOUT_NAMES,
        help=f"Layouts to measure ({', '.join(matrix.LAYOUT_NAMES)}; default: all).",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="PATTERN",
        help="Variants to measure: defaults, nova, pick and cell labels such as "
        "none+native+iot; shell patterns allowed (default: all).",
    )
    parser.add_argument(
        "--jobs",
        nargs="+",
        metavar="NAME",
        choices=jobs.JOB_NAMES,
        help=f"fio jobs, in this order ({', '.join(jobs.JOB_NAMES)}; default: all).",
    )
    parser.add_argument(
        "--runtime",
        type=int,
        metavar="SECONDS",
        help=f"Measured seconds per job (default: {FULL.timing.runtime}, "
        f"{QUICK.timing.runtime} with --quick).",
    )
    parser.add_argument(
        "--ramp",
        type=int,
        metavar="SECONDS",
        help=f"Unmeasured seconds before each job (default: {FULL.timing.ramp}, "
        f"{QUICK.timing.ramp} with --quick).",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help=f"Repetitions of every cell, interleaved (default: {FULL.repeat}, "
        f"{QUICK.repeat} with --quick).",
    )
    parser.add_argument(
        "--size",
        metavar="SIZE",
        help=f"Size of each data disk (default: {compact_size(FULL.disk_size)}, "
        f"{compact_size(QUICK.disk_size)} with --quick).",
    )
    parser.add_argument(
        "--vcpus", type=int, metavar="N", help=f"Guest vCPUs (default: {FULL.vcpus})."
    )
    parser.add_argument(
        "--iothreads",
        type=int,
        metavar="N",
        help="IOThreads per guest, as the flavor extra spec hw:disk_iothreads=N would ask "
        "(default: [disk_tuning] iothreads). Two or more, where libvirt and QEMU map "
        "queues to IOThreads, add the +iotq cells (a disk's queues spread over all N).",
    )
    parser.add_argument(
        "--boot-timeout",
        type=int,
        metavar="SECONDS",
        help="Seconds a guest may take beyond twice its fio jobs' run time before the boot "
        f"counts as hung (default: {FULL.boot_timeout:.0f}). A hung boot, like one whose QEMU "
        "ended without the guest powering off, is left out of the results and the run goes "
        f"on; a cell that loses {guest_run.MAX_LOST} boots is not booted again.",
    )
    parser.add_argument(
        "--memory",
        type=int,
        metavar="MIB",
        help=f"Guest memory in MiB (default: {FULL.memory_mb}).",
    )
    parser.add_argument(
        "--virt-type",
        choices=cpu.VIRT_TYPES,
        default="auto",
        help="kvm, qemu (TCG), or auto (the default): KVM if a probe guest boots under it "
        f"within {cpu.PROBE_TIMEOUT:.0f} s, otherwise TCG, with one line saying why.",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="Leave vCPUs, IOThreads and QEMU's main loop unpinned (default: pinned the "
        "same way at every boot, so repetitions compare).",
    )
    parser.add_argument(
        "--no-host-bound",
        action="store_true",
        help="Skip fio on the host (the bound beside the guest's figures).",
    )
    parser.set_defaults(func=handler)


def settings_from(args: argparse.Namespace) -> guest_run.Settings:
    """The run's settings: --quick or the full defaults, then each option given."""
    base = QUICK if args.quick else FULL
    for name in ("runtime", "ramp", "repeat", "vcpus", "memory", "iothreads", "boot_timeout"):
        value = getattr(args, name)
        if value is not None and value < (0 if name in ("ramp", "iothreads") else 1):
            option = name.replace("_", "-")
            raise exception.InvalidConfig(reason=f"--{option} {value} is out of range")
    timing = jobs.Timing(
        runtime=args.runtime if args.runtime is not None else base.timing.runtime,
        ramp=args.ramp if args.ramp is not None else base.timing.ramp,
    )
    chosen_jobs = base.jobs
    if args.jobs:
        chosen_jobs = tuple(jobs.job_by_name(name) for name in dict.fromkeys(args.jobs))
    return dataclasses.replace(
        base,
        layouts=tuple(dict.fromkeys(args.layouts)) if args.layouts else base.layouts,
        variants=tuple(args.variants) if args.variants else base.variants,
        jobs=chosen_jobs,
        timing=timing,
        repeat=args.repeat or base.repeat,
        disk_size=parse_size(args.size, "--size") if args.size else base.disk_size,
        vcpus=args.vcpus or base.vcpus,
        iothreads=args.iothreads,
        memory_mb=args.memory or base.memory_mb,
        host_bound=not args.no_host_bound,
        virt_type=args.virt_type,
        pin=not args.no_pin,
        boot_timeout=args.boot_timeout or base.boot_timeout,
    )


def handler(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    settings = settings_from(args)
    path = os.path.abspath(args.path or conf.instances_path)

    def announce(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with common.progress("bench guest", enabled=True) as update:
        bench = guest_run.run(
            conf, path, settings, progress=update, failure_dir=args.output, announce=announce
        )
    data = report.write_all(
        guest_report.bench_run(bench, path),
        args.output,
        extra=guest_report.extra(bench),
        extra_markdown=guest_report.markdown,
        caption=guest_report.caption,
    )
    if args.json:
        common.print_json(data)
    else:
        _print_tables(data)
        print(f"Report: {os.path.join(args.output, 'report.md')}, results.json there.")
    for note in data["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if bench.failed:
        # Measured and written, yet not what was asked for: the status says so.
        raise guest_errors.GuestBenchError(
            reason=f"{len(bench.failed)} of the {bench.boots} guest boot(s) run were lost "
            "(hung, or QEMU ended under the guest) and are left out of the results written "
            f"(notes above, logs in {args.output}); run again to measure them"
        )
    return 0


def _print_tables(data: dict) -> None:
    guest = data["guest"]
    host = guest["host"]
    print(
        f"{data['machine']['cpu']} x{data['machine']['cpus']}, libvirt "
        f"{host.get('libvirt_version')}, QEMU {host.get('qemu_version')} ({guest['accel']}"
        f"{', pinned' if guest['pinned'] else ''}), {guest['fio']}; "
        f"guest {guest['vcpus']} vCPUs, {guest['memory_mib']} MiB, {guest['disk_size_mib']} MiB "
        f"disk; {guest['runtime']} s jobs, {guest['repeat']} repetitions"
    )
    print("Cells: median IOPS (min-max) ratio vs defaults / vs nova")
    job_names = list(guest["jobs"])
    for layout in dict.fromkeys(e["layout"] for e in data["results"]):
        columns, rows = guest_report.layout_table(data, layout, job_names)
        common.print_table(layout, columns, rows)
