"""The fio jobs of the in-guest bench: definitions, job files, and fio's terse results.

Every job runs with libaio and ``O_DIRECT`` on the whole disk, time based, so
each figure is IOPS over the same wall time whatever the layout. The guest
runs them in the order of :data:`JOBS` in one boot, on one fresh disk, so
a sparse layout's later jobs find what the earlier writes allocated: the
order is part of the measurement and fixed.

fio prints one "terse" line (version 3, ``;``-separated) per job; the guest
copies it to its console and the host-side bound produces the same line, so
:func:`parse_terse` reads both.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import tarfile
import tempfile

from nova_disk_tuning.common.units import KiB, MiB, compact_size
from nova_disk_tuning_bench.guest.errors import GuestBenchError


@dataclasses.dataclass(frozen=True)
class Job:
    name: str  # also the job file's name: [A-Za-z0-9-] only
    rw: str  # fio's rw=
    block_size: int
    iodepth: int
    dsync: bool  # O_DSYNC: every write reaches stable storage before it completes
    title: str

    @property
    def direction(self) -> str:
        """Which side of fio's result counts: ``read`` or ``write``."""
        return "read" if "read" in self.rw else "write"


JOBS = (
    Job("randread-4k-qd32", "randread", 4 * KiB, 32, False, "4K random read QD32"),
    Job("randwrite-4k-qd32", "randwrite", 4 * KiB, 32, False, "4K random write QD32"),
    Job("randwrite-4k-qd1", "randwrite", 4 * KiB, 1, False, "4K random write QD1"),
    # Sequential like a database's log writer: the latency-bound case of the founding
    # discussion (QD1 8K synchronous writes, 4,800 -> 17,800 IOPS after tuning).
    Job("syncwrite-8k-qd1", "write", 8 * KiB, 1, True, "8K O_DSYNC write QD1"),
    Job("seqwrite-1m-qd8", "write", 1 * MiB, 8, False, "1M sequential write QD8"),
)
JOB_NAMES = tuple(job.name for job in JOBS)


@dataclasses.dataclass(frozen=True)
class Timing:
    runtime: int  # seconds measured per job
    ramp: int  # seconds run before measuring


def job_by_name(name: str) -> Job:
    for job in JOBS:
        if job.name == name:
            return job
    raise GuestBenchError(reason=f"unknown fio job {name!r}; known: {', '.join(JOB_NAMES)}")


def job_options(job: Job, timing: Timing) -> list[tuple[str, str]]:
    """fio options of ``job`` without the file: the same in the guest and on the host."""
    options = [
        ("ioengine", "libaio"),
        ("direct", "1"),
        ("rw", job.rw),
        ("bs", compact_size(job.block_size, lower=True)),
        ("iodepth", str(job.iodepth)),
    ]
    if job.dsync:
        options.append(("sync", "dsync"))
    options += [
        ("time_based", "1"),
        ("runtime", str(timing.runtime)),
        ("ramp_time", str(timing.ramp)),
        # No random map: its bookkeeping costs CPU a TCG guest does not have to spare,
        # and a time-based run may cover a block twice anyway.
        ("norandommap", "1"),
        ("randrepeat", "0"),
        # fio would fallocate a regular file before the job: a sparse layout must
        # stay sparse for the host-side bound, as it is for the guest.
        ("fallocate", "none"),
        ("group_reporting", "1"),
    ]
    return options


def render(job: Job, timing: Timing, filename: str, size: int | None = None) -> str:
    """The job file that runs ``job`` on ``filename`` (a whole device unless ``size``)."""
    lines = [f"[{job.name}]", f"filename={filename}"]
    if size is not None:
        lines.append(f"size={size}")
    lines += [f"{key}={value}" for key, value in job_options(job, timing)]
    return "\n".join(lines) + "\n"


def describe(job: Job, timing: Timing) -> str:
    """The job's options on one line, for the report's "how" column."""
    return "fio " + " ".join(f"--{key}={value}" for key, value in job_options(job, timing))


def jobs_archive(path: str, jobs: tuple[Job, ...], timing: Timing, target: str) -> None:
    """The jobs disk: a tar archive of ``target``, ``jobs`` and one job file per job.

    The guest unpacks it straight from the block device (busybox ``tar -x -f
    /dev/vdb``); tar pads to 10 KiB records, a whole number of sectors.
    """
    members = {
        "target": f"{target}\n",
        "jobs": "".join(f"{job.name}\n" for job in jobs),
    }
    for job in jobs:
        members[f"{job.name}.fio"] = render(job, timing, f"/dev/{target}")
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------- results

# Fields of a terse version 3 line (0-based): the read side starts at 5, the write
# side 41 fields later; in each, IOPS is the 3rd, total latency mean (usec) the 35th
# and the 99th completion latency percentile ("99.000000%=<usec>") the 25th.
TERSE_VERSION = "3"
_ERROR = 4
_SIDE = {"read": 5, "write": 46}
_BANDWIDTH, _IOPS, _LAT_P99, _LAT_MEAN = 1, 2, 24, 34
_MIN_FIELDS = 46 + 41


@dataclasses.dataclass(frozen=True)
class FioResult:
    iops: float
    bandwidth_kib: float  # KiB/s
    lat_mean_us: float  # total latency (submission + completion)
    lat_p99_us: float | None  # completion latency, 99th percentile


def parse_terse(line: str, direction: str) -> FioResult:
    """The ``direction`` ("read"/"write") side of one fio terse v3 line."""
    fields = line.strip().split(";")
    if len(fields) < _MIN_FIELDS or fields[0] != TERSE_VERSION:
        raise ValueError(
            f"not a fio terse version {TERSE_VERSION} line ({len(fields)} fields): {line[:80]!r}"
        )
    if fields[_ERROR] != "0":
        raise ValueError(f"fio reported error {fields[_ERROR]} for job {fields[2]}")
    base = _SIDE[direction]
    p99 = fields[base + _LAT_P99]
    return FioResult(
        iops=float(fields[base + _IOPS]),
        bandwidth_kib=float(fields[base + _BANDWIDTH]),
        lat_mean_us=float(fields[base + _LAT_MEAN]),
        lat_p99_us=float(p99.split("=", 1)[1]) if p99.startswith("99.0") else None,
    )


def run_on_host(job: Job, timing: Timing, path: str, size: int) -> FioResult:
    """Run ``job`` with the host's fio on ``path``: the host-side bound of the guest's figure."""
    with tempfile.TemporaryDirectory(prefix="ndt-fio-") as tmp:
        jobfile = os.path.join(tmp, f"{job.name}.fio")
        with open(jobfile, "w") as handle:
            handle.write(render(job, timing, path, size))
        argv = ["fio", "--output-format=terse", "--terse-version=3", jobfile]
        timeout = 4 * (timing.runtime + timing.ramp) + 120
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GuestBenchError(reason=f"fio {job.name} on the host ({path}): {exc}") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("3;")]
    if proc.returncode != 0 or not lines:
        detail = " ".join(proc.stderr.split())[-300:] or f"exit code {proc.returncode}"
        raise GuestBenchError(reason=f"fio {job.name} on the host ({path}) failed: {detail}")
    try:
        return parse_terse(lines[0], job.direction)
    except ValueError as exc:
        raise GuestBenchError(reason=f"fio {job.name} on the host ({path}): {exc}") from None
