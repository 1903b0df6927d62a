"""Run the benchmark experiments and collect what they measured.

Each experiment module has ``run(workdir, quick=False, repeat=3) ->
list[Result]``; a module may also accept ``conf`` and ``progress`` keyword
arguments, which the harness passes when the signature has them. Whatever an
experiment could not measure (no root, no io_uring, a module that is not
installed) ends up in the run's notes: a benchmark that silently measures
less than asked for is misleading.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import inspect
import logging as stdlib_logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning.common.mounts import fs_type
from nova_disk_tuning_bench.model import Result

LOG = logging.getLogger(__name__)
# Whose warnings become the notes of an experiment.
LOGGED_PACKAGES = ("nova_disk_tuning", "nova_disk_tuning_bench")

# name -> module; the order is the order they run and are reported in.
EXPERIMENTS: dict[str, str] = {
    "storage": "nova_disk_tuning_bench.primitives",
    "conversion": "nova_disk_tuning_bench.conversion",
    "layouts": "nova_disk_tuning_bench.layouts",
    "spawn": "nova_disk_tuning_bench.spawn",
    "resize": "nova_disk_tuning_bench.resize",
}
QUICK_REPEAT = 2
FULL_REPEAT = 3

Progress = Callable[[float], None]


@dataclasses.dataclass
class ExperimentRun:
    """One experiment module's outcome: its results, or why there are none."""

    name: str
    module: str
    status: str  # "ok", "failed" or "unavailable"
    results: list[Result] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    elapsed: float = 0.0
    targets: list[Any] = dataclasses.field(default_factory=list)  # report.Target


@dataclasses.dataclass
class BenchRun:
    date: str
    quick: bool
    repeat: int
    path: str
    machine: dict[str, str]
    experiments: list[ExperimentRun]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def results(self) -> list[Result]:
        return [r for e in self.experiments for r in e.results]

    @property
    def failed(self) -> bool:
        return any(e.status == "failed" for e in self.experiments)


class _NoteCollector(stdlib_logging.Handler):
    """Keeps the warnings experiments log while they run: they become report notes."""

    def __init__(self) -> None:
        super().__init__(level=stdlib_logging.WARNING)
        self.notes: list[str] = []

    def emit(self, record: stdlib_logging.LogRecord) -> None:
        self.notes.append(record.getMessage())


def machine_facts(path: str) -> dict[str, str]:
    """What the figures depend on: CPU, kernel, file system of ``path``, tool versions."""
    facts = {
        "cpu": _cpu_model(),
        "cpus": str(os.cpu_count() or "?"),
        "kernel": platform.release(),
        "filesystem": fs_type(path),
        "qemu-img": _tool_version(["qemu-img", "--version"]),
        "fio": _tool_version(["fio", "--version"]),
        "python": platform.python_version(),
        "root": "yes" if os.geteuid() == 0 else "no",
    }
    return facts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    first = out.strip().splitlines()[0] if out.strip() else "unknown"
    match = re.search(r"\d+\.\d+(?:\.\d+)?", first)
    return match.group(0) if match else first


def _call_run(module: Any, workdir: str, quick: bool, repeat: int, **extra: Any) -> list[Result]:
    params = inspect.signature(module.run).parameters
    accepted = {k: v for k, v in extra.items() if k in params}
    return list(module.run(workdir, quick=quick, repeat=repeat, **accepted))


def run_experiment(
    name: str,
    module_name: str,
    workdir: str,
    quick: bool,
    repeat: int,
    conf: cfg.ConfigOpts,
    progress: Progress | None = None,
) -> ExperimentRun:
    """Run one experiment module in its own work directory, catching its failure."""
    outcome = ExperimentRun(name=name, module=module_name, status="ok")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        outcome.status = "unavailable"
        outcome.notes.append(f"{name}: not measured, module {exc.name} is not installed")
        return outcome
    outcome.targets = list(getattr(module, "TARGETS", []))
    collector = _NoteCollector()
    # A handler on the packages' (stdlib) loggers: every module's LOG reaches
    # one, the plugin's (what it warned about) and the benchmarks' own.
    package_logs = [stdlib_logging.getLogger(name) for name in LOGGED_PACKAGES]
    for package_log in package_logs:
        package_log.addHandler(collector)
    os.makedirs(workdir, exist_ok=True)
    started = time.monotonic()
    try:
        outcome.results = _call_run(
            module, workdir, quick, repeat, conf=conf, progress=progress or (lambda p: None)
        )
    except Exception as exc:
        # One broken experiment must not cost the figures of the others.
        outcome.status = "failed"
        outcome.error = f"{type(exc).__name__}: {exc}"
        LOG.debug("experiment %s failed:\n%s", name, traceback.format_exc())
    finally:
        for package_log in package_logs:
            package_log.removeHandler(collector)
        outcome.elapsed = time.monotonic() - started
        shutil.rmtree(workdir, ignore_errors=True)
    outcome.notes.extend(f"{name}: {note}" for note in collector.notes)
    if outcome.status == "ok" and not outcome.results:
        outcome.notes.append(f"{name}: returned no results")
    return outcome


def run(
    conf: cfg.ConfigOpts,
    path: str | None = None,
    names: Sequence[str] | None = None,
    quick: bool = False,
    repeat: int | None = None,
    progress: Progress | None = None,
) -> BenchRun:
    """Run the experiments ``names`` (default: all) in a fresh directory under ``path``."""
    names = list(names or EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(
            f"unknown experiment(s) {', '.join(unknown)}; known: {', '.join(EXPERIMENTS)}"
        )
    path = os.path.abspath(path or conf.instances_path)
    os.makedirs(path, exist_ok=True)
    repeat = repeat or (QUICK_REPEAT if quick else FULL_REPEAT)
    bench = BenchRun(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        quick=quick,
        repeat=repeat,
        path=path,
        machine=machine_facts(path),
        experiments=[],
    )
    if os.geteuid() != 0:
        bench.notes.append(
            "not root: experiments on loop block devices (BLKZEROOUT, 4096-byte sectors) "
            "cannot run; run as root to measure them"
        )
    top = tempfile.mkdtemp(prefix="bench-", dir=path)
    report = progress or (lambda percent: None)
    try:
        for index, name in enumerate(names):
            share = 100.0 / len(names)

            def scaled(percent: float, base: float = index * share, share: float = share) -> None:
                report(base + share * min(max(percent, 0.0), 100.0) / 100.0)

            scaled(0.0)
            bench.experiments.append(
                run_experiment(
                    name, EXPERIMENTS[name], os.path.join(top, name), quick, repeat, conf, scaled
                )
            )
            scaled(100.0)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return bench
