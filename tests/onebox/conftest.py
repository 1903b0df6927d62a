"""The one-box Nova, started once for the module that asks for it (root only)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from nova_disk_tuning_bench.guest.errors import GuestKitError, LibvirtdError
from nova_disk_tuning_bench.onebox import lifecycle
from nova_disk_tuning_bench.onebox.box import OneBox
from nova_disk_tuning_bench.onebox.procs import OneboxError

ONEBOX_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if ONEBOX_DIR in item.path.parents:
            item.add_marker(pytest.mark.root)


def processes_naming(workdir: Path) -> list[int]:
    """Pids whose command line names ``workdir`` (libvirtd, virtlogd, QEMU, Nova's services)."""
    mine = str(workdir).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if mine in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


@dataclasses.dataclass
class Run:
    """What one run of the box showed, and the box itself (stopped by then)."""

    box: OneBox
    outcomes: dict[str, lifecycle.Outcome]
    unexpected: list[str]


@pytest.fixture(scope="package")
def onebox(request: pytest.FixtureRequest) -> Iterator[Run]:
    if os.geteuid() != 0:
        pytest.skip("the one-box runs QEMU, libvirtd and Nova's privileged helpers as root")
    # Short: the private libvirtds' sockets live under it (108 bytes at most).
    workdir = Path("/var/tmp") / f"ndt-onebox-test-{os.getpid()}"
    try:
        with OneBox(workdir) as box:
            outcomes = lifecycle.run_all(box)
            unexpected = box.unexpected_log_lines()
    except (OneboxError, GuestKitError, LibvirtdError) as exc:
        pytest.fail(f"the one-box failed: {exc}", pytrace=False)
    yield Run(box, outcomes, unexpected)
    # Kept when a test failed: its logs say why.
    if request.session.testsfailed == 0:
        shutil.rmtree(workdir)
