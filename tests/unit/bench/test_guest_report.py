"""bench guest: its options, its JSON entries and ratios, and the pid-file reaper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nova_disk_tuning_bench import summary
from nova_disk_tuning_bench.cli_guest import settings_from
from nova_disk_tuning_bench.guest import jobs, matrix, procs
from nova_disk_tuning_bench.guest import report as guest_report
from nova_disk_tuning_bench.guest.jobs import JOBS, FioResult
from nova_disk_tuning_bench.guest.run import FULL, QUICK, Cell, GuestBench, estimate_seconds
from nova_disk_tuning_bench.model import Result

from nova_disk_tuning import exception
from nova_disk_tuning.cmd import main as cli


def _args(*argv: str):
    return cli.build_parser().parse_args(["bench", "guest", *argv])


def test_quick_and_full_settings_and_options():
    assert settings_from(_args("--quick")) == QUICK
    assert settings_from(_args()) == FULL
    custom = settings_from(
        _args("--quick", "--runtime", "30", "--ramp", "0", "--repeat", "5", "--size", "2G",
              "--layouts", "raw-sparse", "lvm", "--variants", "nova", "none+*",
              "--jobs", "randwrite-4k-qd1", "randread-4k-qd32", "--no-host-bound")
    )  # fmt: skip
    assert (custom.timing.runtime, custom.timing.ramp, custom.repeat) == (30, 0, 5)
    assert custom.disk_size == 2 << 30 and custom.layouts == ("raw-sparse", "lvm")
    assert custom.variants == ("nova", "none+*") and not custom.host_bound
    assert [j.name for j in custom.jobs] == ["randwrite-4k-qd1", "randread-4k-qd32"]
    with pytest.raises(exception.InvalidConfig, match="--runtime 0"):
        settings_from(_args("--runtime", "0"))
    assert FULL.iothreads is None  # [disk_tuning] iothreads decides
    assert settings_from(_args("--iothreads", "2", "--vcpus", "4")).iothreads == 2
    assert settings_from(_args("--iothreads", "0")).iothreads == 0  # hw:disk_iothreads=0
    with pytest.raises(exception.InvalidConfig, match="--iothreads -1"):
        settings_from(_args("--iothreads", "-1"))
    assert settings_from(_args("--boot-timeout", "45")).boot_timeout == 45
    with pytest.raises(exception.InvalidConfig, match="--boot-timeout 0 is out of range"):
        settings_from(_args("--boot-timeout", "0"))
    with pytest.raises(SystemExit):
        _args("--layouts", "nfs")


def test_plain_bench_still_runs_the_host_experiments():
    args = cli.build_parser().parse_args(["bench", "--quick"])
    assert args.func.__module__ == "nova_disk_tuning_bench.cli" and args.experiment is None


def test_estimate_counts_boots_jobs_and_the_host_bound():
    # 5 jobs x (3 + 1) s = 20 s a boot plus 20 s overhead; host: 20 s per layout.
    assert estimate_seconds(QUICK, boots=2, layouts=1) == 2 * (2 * 40 + 20)


def _fio(iops: float) -> FioResult:
    return FioResult(iops=iops, bandwidth_kib=iops * 4, lat_mean_us=100.0, lat_p99_us=None)


def _bench() -> GuestBench:
    job = JOBS[0].name
    variants = {
        "defaults": matrix.defaults_variant(),
        "nova": matrix.Variant("nova", matrix.Cell("none", None, False), None, 1, True, ""),
        "pick": matrix.Variant("pick", matrix.Cell("none", "native", True), 2, 1, True, "why"),
    }
    runs = {"defaults": [100, 300, 200], "nova": [400, 400, 400], "pick": [800, 900, 700]}
    bench = GuestBench(QUICK)
    for name, variant in variants.items():
        bench.cells.append(
            Cell(
                "raw-prealloc",
                variant,
                f"<driver {name}/>",
                runs={job: [_fio(v) for v in runs[name]]},
            )
        )
    bench.host[("raw-prealloc", job)] = [_fio(5000), _fio(7000)]
    return bench


def test_entries_have_medians_ranges_ratios_and_the_bound():
    entries = {e["variant"]: e for e in guest_report.entries(_bench())}
    pick = entries["pick"]
    assert (pick["iops"], pick["iops_min"], pick["iops_max"]) == (800, 700, 900)
    assert pick["ratio_defaults"] == 4.0 and pick["ratio_nova"] == 2.0
    assert pick["driver"] == "<driver pick/>" and pick["chosen"] and pick["host_iops"] == 6000
    assert entries["defaults"]["ratio_defaults"] == 1.0 and not entries["defaults"]["chosen"]
    assert set(entries["nova"]) >= {"layout", "variant", "job", "iops", "iops_min", "iops_max"}


def test_common_report_rows_compare_with_defaults():
    rows = {r.variant: r for r in guest_report.results(_bench())}
    assert rows["pick"].baseline == "defaults" and rows["pick"].chosen
    assert rows["defaults"].baseline is None and rows["host-bound"].baseline is None
    assert rows["pick"].experiment == "guest/raw-prealloc/randread-4k-qd32"
    assert rows["pick"].unit == "iops" and rows["pick"].seconds == [800, 900, 700]


def test_layout_table_marks_the_pick_and_unsafe_cells():
    bench = _bench()
    bench.cells[1].variant = matrix.Variant("nova", matrix.Cell("none", "native", False), None, 1,
                                            False, "sparse")  # fmt: skip
    data = {"results": guest_report.entries(bench), "host_bound": guest_report.host_entries(bench)}
    columns, rows = guest_report.layout_table(data, "raw-prealloc", [JOBS[0].name])
    assert columns == ["variant (* pick, ! unsafe)", JOBS[0].name]
    assert [row[0] for row in rows] == ["defaults", "!nova", "*pick", "host-bound"]
    assert rows[2][1] == "800 (700-900) 4.00x/2.00x"
    assert rows[3][1] == "6.0k (5.0k-7.0k)"


def _entry(variant: str, runs: list[float], safe: bool = True) -> dict:
    return {"layout": "raw-sparse", "job": "randwrite-4k-qd1", "variant": variant,
            "iops": sorted(runs)[len(runs) // 2], "iops_min": min(runs),
            "iops_max": max(runs), "safe": safe}  # fmt: skip


def _checked(entries: list[dict]) -> dict[str, dict]:
    """The targets of ``entries``, checked as the common report checks them."""
    rows = summary.summarize(
        Result(guest_report.experiment(e["layout"], e["job"]), e["variant"], "", [e["iops"]],
               unit="iops")
        for e in entries
    )  # fmt: skip
    checked = summary.check_targets(rows, guest_report.targets(entries))
    return {t["what"].split(" (")[0]: t for t in checked}


def test_targets_hold_the_pick_to_the_fastest_safe_cell_and_to_nova():
    # A faster but unsafe cell does not count; a safe one 10% ahead still meets it.
    met = _checked([_entry("pick", [1000, 1100, 900]), _entry("nova", [1000, 1000, 1000]),
                    _entry("none+native+iot", [5000, 5000, 5000], safe=False),
                    _entry("none+threads+iot", [1110, 1110, 1110])])  # fmt: skip
    near = met["pick within 10% of the fastest safe cell"]
    assert near["against"] == "none+threads+iot" and near["met"]
    assert round(near["measured"], 2) == 0.9
    nova = met["pick not slower than Nova beyond the noise"]
    assert nova["at_least"] == 0.8 and nova["met"]  # pick's spread is 20%
    # Writeback 30% ahead, Nova ahead beyond both spreads: neither is met.
    missed = _checked([_entry("pick", [700, 700]), _entry("nova", [800, 820]),
                       _entry("defaults", [1000, 1000])])  # fmt: skip
    assert missed["pick within 10% of the fastest safe cell"]["against"] == "defaults"
    assert not missed["pick within 10% of the fastest safe cell"]["met"]
    assert not missed["pick not slower than Nova beyond the noise"]["met"]
    # Noise wider than the median itself: the bar stops at 0, never below.
    wild = _checked([_entry("pick", [100, 100, 400]), _entry("nova", [300, 300])])
    assert wild["pick not slower than Nova beyond the noise"]["at_least"] == 0.0
    # No pick measured: nothing to hold.
    assert guest_report.targets([_entry("nova", [1, 1])]) == []


def test_reaper_leaves_a_pid_that_runs_another_program(tmp_path: Path):
    run = tmp_path / "libvirtd" / "run"
    (run / "qemu").mkdir(parents=True)
    (run / "qemu" / "g.pid").write_text(f"{os.getpid()}\n")  # this is python, not QEMU
    (run / "libvirtd.pid").write_text("999999999\n")  # no such process
    assert procs.reap_pidfiles(tmp_path) == []
    assert procs.pid_from(run / "qemu" / "g.pid", ("python",)) == os.getpid()
    assert procs.pid_from(run / "qemu" / "g.pid", ("python",), marker="not-in-argv") is None


def test_in_guest_tables_keep_fio_order_after_a_round_trip_through_results_json():
    # results.json stores keys sorted; the columns stay in the order fio ran the jobs.
    jobs_sorted = {name: {"fio": "", "title": name} for name in sorted(jobs.JOB_NAMES)}
    entry = {"layout": "raw-sparse", "variant": "pick", "iops": 1.0, "iops_min": 1.0,
             "iops_max": 1.0, "chosen": True, "safe": True, "ratio_defaults": None,
             "ratio_nova": None}  # fmt: skip
    data = {
        "guest": {"jobs": jobs_sorted},
        "results": [dict(entry, job=name) for name in jobs.JOB_NAMES],
        "host_bound": [],
    }
    header = next(line for line in guest_report.markdown(data).splitlines() if "| variant" in line)
    assert header == "| variant (* pick, ! unsafe) | " + " | ".join(jobs.JOB_NAMES) + " |"
    assert list(jobs.JOB_NAMES) != sorted(jobs.JOB_NAMES)  # else this test proves nothing
