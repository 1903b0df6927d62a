"""Helpers shared by the CLI commands: sizes, tables, JSON, progress."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.agent import loader
from nova_disk_tuning.agent.driver import LibvirtDriver

# The compute driver the commands use (nova_disk_tuning.compute_drivers).
DRIVER_NAME = "libvirt"


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Print a readable table (rich) on stdout."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich's own answer to a reader that left is a silent
            # SystemExit(1); the CLI says what happened (see cmd.main).
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # Cells are plain text: "[libvirt] disk_cachemodes" is not rich markup.
        table.add_row(*("" if v is None else escape(str(v)) for v in row))
    _Console(width=max(120, Console().width)).print(table)


@contextmanager
def progress(description: str, enabled: bool = True) -> Iterator[Callable[[float], None]]:
    """Yield ``update(percent)``: a progress bar on a terminal, plain lines elsewhere.

    Plain lines go to stderr every 10% so logs of non-interactive runs still
    show that long work is moving.
    """
    if not enabled:
        yield lambda percent: None
        return
    if sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=False) as bar:
            task = bar.add_task(description, total=100.0)
            yield lambda percent: bar.update(task, completed=percent)
        return

    state = {"next": 0.0}

    def update(percent: float) -> None:
        if percent >= state["next"]:
            print(f"{description}: {percent:.0f}%", file=sys.stderr, flush=True)
            state["next"] = (int(percent) // 10 + 1) * 10.0

    yield update


def parse_extra_specs(items: Sequence[str]) -> dict[str, str]:
    specs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise exception.InvalidConfig(
                reason=f"--extra-spec {item!r}: use KEY=VALUE, e.g. hw:disk_iothreads=2"
            )
        specs[key.strip()] = value.strip()
    return specs


def compute_driver(conf: cfg.ConfigOpts) -> LibvirtDriver:
    """The compute driver the commands drive (entry point ``libvirt``).

    Another package may register its own under that name: a subclass of the
    agent's driver, which is what the commands call.
    """
    driver = loader.compute_driver(DRIVER_NAME)
    if not (isinstance(driver, type) and issubclass(driver, LibvirtDriver)):
        raise exception.PluginLoadError(
            kind="compute driver",
            name=DRIVER_NAME,
            entry_point=loader.COMPUTE_DRIVERS,
            reason=f"{driver!r} is not a subclass of {LibvirtDriver.__module__}.LibvirtDriver",
        )
    return driver(conf)
