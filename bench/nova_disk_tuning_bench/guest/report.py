"""The in-guest bench's results as the bench report's rows, JSON entries and tables.

The common report (``results.json``, ``report.md``, one chart per experiment)
is made by :func:`nova_disk_tuning_bench.report.write_all` from
:func:`bench_run`: one experiment ``guest/<layout>/<job>`` per layout and
job, whose rows are the variants (IOPS, baseline ``defaults``, the pick
marked as chosen) and the host-side bound. On top of that the document gets
``results``: one entry per (layout, variant, job) with the median, min and
max IOPS, the ``<driver>`` element used, the ratios against ``defaults`` and
``nova``, whether the cell is safe, and the host-side bound beside it; and
``guest``: how the run was made. Every layout and job also gets the two
targets the policy is held to (:func:`targets`).
"""

from __future__ import annotations

import datetime
import math
import statistics
from collections.abc import Sequence
from typing import Any

from nova_disk_tuning.common.units import MiB
from nova_disk_tuning_bench import harness
from nova_disk_tuning_bench.guest import jobs as guest_jobs
from nova_disk_tuning_bench.guest.run import GuestBench
from nova_disk_tuning_bench.model import Result
from nova_disk_tuning_bench.summary import Target

HOST_BOUND = "host-bound"
# The pick is held to within 10% of the fastest safe cell measured.
NEAR_BEST = 0.9
MODULE = "nova_disk_tuning_bench.guest"


def experiment(layout: str, job: str) -> str:
    return f"guest/{layout}/{job}"


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    ratio = value / base
    return round(ratio, 3) if math.isfinite(ratio) else None


def results(bench: GuestBench) -> list[Result]:
    """The rows of the common report: variants and the host-side bound, per layout and job."""
    out = []
    timing = bench.settings.timing
    names = {(c.layout, c.variant.name) for c in bench.cells}
    for job in bench.settings.jobs:
        how_job = guest_jobs.describe(job, timing)
        for cell in bench.cells:
            runs = cell.runs.get(job.name, [])
            if not runs:
                continue
            has_defaults = (cell.layout, "defaults") in names
            out.append(
                Result(
                    experiment=experiment(cell.layout, job.name),
                    variant=cell.variant.name,
                    how=f"{cell.driver}  {how_job} --filename=/dev/vda (in the guest)",
                    seconds=[r.iops for r in runs],
                    baseline="defaults"
                    if has_defaults and cell.variant.name != "defaults"
                    else None,
                    chosen=cell.variant.name == "pick",
                    unit="iops",
                )
            )
        for (layout, job_name), runs in bench.host.items():
            if job_name == job.name:
                out.append(
                    Result(
                        experiment=experiment(layout, job.name),
                        variant=HOST_BOUND,
                        how=f"{how_job} on a fresh {layout} disk, on the host",
                        seconds=[r.iops for r in runs],
                        unit="iops",
                    )
                )
    return out


def entries(bench: GuestBench) -> list[dict[str, Any]]:
    """One entry per (layout, variant, job): the ``results`` list of ``--json``."""
    medians = {
        (c.layout, c.variant.name, job): _median([r.iops for r in runs])
        for c in bench.cells
        for job, runs in c.runs.items()
    }
    out = []
    for cell in bench.cells:
        for job in bench.settings.jobs:
            runs = cell.runs.get(job.name, [])
            if not runs:
                continue
            iops = [r.iops for r in runs]
            median = _median(iops)
            host = [r.iops for r in bench.host.get((cell.layout, job.name), [])]
            out.append(
                {
                    "layout": cell.layout,
                    "variant": cell.variant.name,
                    "job": job.name,
                    "iops": median,
                    "iops_min": min(iops),
                    "iops_max": max(iops),
                    "iops_runs": iops,
                    "driver": cell.driver,
                    "iothreads": cell.variant.domain_iothreads,
                    "label": cell.variant.cell.label,
                    "chosen": cell.variant.name == "pick",
                    "safe": cell.variant.safe,
                    "why": cell.variant.why,
                    "qemu": cell.qemu,
                    "ratio_defaults": _ratio(
                        median, medians.get((cell.layout, "defaults", job.name))
                    ),
                    "ratio_nova": _ratio(median, medians.get((cell.layout, "nova", job.name))),
                    "host_iops": _median(host),
                    "bandwidth_kib": _median([r.bandwidth_kib for r in runs]),
                    "lat_mean_us": _median([r.lat_mean_us for r in runs]),
                    "lat_p99_us": _median([r.lat_p99_us for r in runs if r.lat_p99_us is not None]),
                }
            )
    return out


def targets(entries: Sequence[dict[str, Any]]) -> list[Target]:
    """What the pick is held to, per layout and job, from :func:`entries`.

    - within 10% of the fastest *safe* cell measured (``safe`` as the matrix
      says: legal, no native AIO where the storage allocates on write, no
      io_uring on the denylist);
    - not slower than Nova's XML beyond the measured noise: the larger of the
      two spreads, (max - min) / median, is what a ratio below 1 may lose.
    """
    out = []
    keys = dict.fromkeys((e["layout"], e["job"]) for e in entries)
    for layout, job in keys:
        mine = {e["variant"]: e for e in entries if (e["layout"], e["job"]) == (layout, job)}
        pick = mine.get("pick")
        if pick is None or not pick["iops"]:
            continue
        name = experiment(layout, job)
        rivals = [e for v, e in mine.items() if v != "pick" and e["safe"] and e["iops"]]
        if rivals:
            best = max(rivals, key=lambda e: e["iops"])
            out.append(
                Target(
                    experiment=name,
                    against=best["variant"],
                    at_least=NEAR_BEST,
                    what="pick within 10% of the fastest safe cell",
                    variant="pick",
                )
            )
        nova = mine.get("nova")
        if nova is not None and nova["iops"]:
            noise = max(_spread(pick), _spread(nova))
            out.append(
                Target(
                    experiment=name,
                    against="nova",
                    # A spread past 100% would ask for a negative ratio.
                    at_least=max(0.0, round(1.0 - noise, 2)),
                    what=f"pick not slower than Nova beyond the noise ({noise:.0%})",
                    variant="pick",
                )
            )
    return out


def _spread(entry: dict[str, Any]) -> float:
    return float(entry["iops_max"] - entry["iops_min"]) / float(entry["iops"])


def host_entries(bench: GuestBench) -> list[dict[str, Any]]:
    out = []
    for (layout, job), runs in bench.host.items():
        iops = [r.iops for r in runs]
        out.append(
            {
                "layout": layout,
                "job": job,
                "iops": _median(iops),
                "iops_min": min(iops),
                "iops_max": max(iops),
                "iops_runs": iops,
            }
        )
    return out


def guest_facts(bench: GuestBench) -> dict[str, Any]:
    """How the run was made: settings, versions, the facts each pick was decided on."""
    settings = bench.settings
    caps = bench.caps.to_dict() if bench.caps else {}
    accel = bench.accel
    return {
        "kit": bench.kit_key,
        "fio": bench.fio_version,
        "host": caps,
        # libvirt's domain type, KVM or TCG, and why (guest.cpu.choose).
        "virt_type": accel.virt_type if accel else None,
        "accel": accel.name if accel else None,
        "accel_reason": accel.reason if accel else None,
        "pinned": settings.pin,
        "vcpus": settings.vcpus,
        # --iothreads as given (the flavor's hw:disk_iothreads); None: the config's.
        "iothreads": settings.iothreads,
        "memory_mib": settings.memory_mb,
        "disk_size_mib": settings.disk_size // MiB,
        "runtime": settings.timing.runtime,
        "ramp": settings.timing.ramp,
        "repeat": settings.repeat,
        "boots": bench.boots,
        "elapsed": round(bench.elapsed, 1),
        "estimate": round(bench.estimate, 1),
        "jobs": {
            job.name: {"title": job.title, "fio": guest_jobs.describe(job, settings.timing)}
            for job in settings.jobs
        },
        "layouts": {
            name: {
                "facts": {
                    key: getattr(facts, key)
                    for key in (
                        "source_type",
                        "format",
                        "size",
                        "allocated",
                        "fully_allocated",
                        "direct_io",
                        "storage_kind",
                        "preallocated",
                    )
                },
                "pick": next(
                    (
                        c.variant.why
                        for c in bench.cells
                        if c.layout == name and c.variant.name == "pick"
                    ),
                    None,
                ),
            }
            for name, facts in bench.facts.items()
        },
    }


def bench_run(bench: GuestBench, path: str) -> harness.BenchRun:
    """The run as the common report's :class:`~nova_disk_tuning_bench.harness.BenchRun`."""
    experiment_run = harness.ExperimentRun(
        name="guest",
        module=MODULE,
        status="ok",
        results=results(bench),
        notes=[f"guest: {note}" for note in bench.notes]
        + [f"guest: left out, lost: {line}" for line in bench.failed],
        elapsed=bench.elapsed,
        targets=targets(entries(bench)),
    )
    return harness.BenchRun(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        quick=bench.settings.quick,
        repeat=bench.settings.repeat,
        path=path,
        machine=harness.machine_facts(path),
        experiments=[experiment_run],
    )


# --------------------------------------------------------------------------- text


def fmt_iops(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def cell_text(entry: dict[str, Any]) -> str:
    """``12.3k (11.9k-12.8k) 1.52x/1.10x``: median, min-max, vs defaults / vs nova."""
    text = (
        f"{fmt_iops(entry['iops'])} ({fmt_iops(entry['iops_min'])}-{fmt_iops(entry['iops_max'])})"
    )
    ratios = [
        "-" if entry[key] is None else f"{entry[key]:.2f}x"
        for key in ("ratio_defaults", "ratio_nova")
    ]
    return f"{text} {ratios[0]}/{ratios[1]}"


def layout_table(
    data: dict[str, Any], layout: str, job_names: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of one layout: variants down, jobs across, host bound last."""
    columns = ["variant (* pick, ! unsafe)", *job_names]
    rows = []
    mine = [e for e in data["results"] if e["layout"] == layout]
    for variant in dict.fromkeys(e["variant"] for e in mine):
        by_job = {e["job"]: e for e in mine if e["variant"] == variant}
        first = next(iter(by_job.values()))
        mark = ("*" if first["chosen"] else "") + ("" if first["safe"] else "!")
        rows.append(
            [f"{mark}{variant}"] + [cell_text(by_job[j]) if j in by_job else "-" for j in job_names]
        )
    bound = {e["job"]: e for e in data["host_bound"] if e["layout"] == layout}
    if bound:
        rows.append(
            [HOST_BOUND]
            + [
                f"{fmt_iops(bound[j]['iops'])} ({fmt_iops(bound[j]['iops_min'])}-"
                f"{fmt_iops(bound[j]['iops_max'])})"
                if j in bound
                else "-"
                for j in job_names
            ]
        )
    return columns, rows


def accel_line(guest: dict[str, Any]) -> str:
    """How the guests ran, from the document's ``guest``: KVM or TCG, why, pinned or not."""
    # A results.json made before --virt-type existed ran under TCG, unpinned.
    accel = guest.get("accel") or "TCG"
    reason = guest.get("accel_reason") or "bench guest ran every guest under TCG then"
    pinned = "vCPUs and IOThreads pinned" if guest.get("pinned") else "not pinned"
    return f"guests under {accel} ({reason}); {pinned}"


def _sentence(line: str) -> str:
    return line[:1].upper() + line[1:] + "."


def caption(data: dict[str, Any]) -> str:
    """The line under every chart's title."""
    return accel_line(data["guest"])


def markdown(data: dict[str, Any]) -> str:
    """The in-guest section of report.md: one table per layout."""
    # In the order fio ran them (results.json stores its keys sorted).
    ordered = [name for name in guest_jobs.JOB_NAMES if name in data["guest"]["jobs"]]
    job_names = ordered + sorted(set(data["guest"]["jobs"]) - set(ordered))
    lines = [
        "## In the guest: IOPS per layout, variant and job",
        "",
        _sentence(accel_line(data["guest"])),
        "",
        "Median (min-max) of the repetitions, then the ratio against `defaults` and "
        "against `nova` (`-`: not measured). `*` marks the policy's pick, `!` a legal "
        "but unsafe cell. `host-bound`: the same fio job on a fresh disk of the layout, "
        "on the host.",
        "",
    ]
    for layout in dict.fromkeys(e["layout"] for e in data["results"]):
        columns, rows = layout_table(data, layout, job_names)
        lines += [f"### {layout}", "", "| " + " | ".join(columns) + " |"]
        lines.append("|" + "---|" * len(columns))
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
        ]
        lines.append("")
    return "\n".join(lines)


def extra(bench: GuestBench) -> dict[str, Any]:
    return {
        "results": entries(bench),
        "host_bound": host_entries(bench),
        "guest": guest_facts(bench),
    }
