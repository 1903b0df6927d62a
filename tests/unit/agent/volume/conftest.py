"""Fixtures for volume driver unit tests: Cinder connection_info and a stand-in probe.

Unit tests run without root, so block devices and shares are not real here:
the probe answers what a test says, and ``stat`` of a block device path is
stood in by a test. ``tests/functional/test_volume_drivers.py`` runs the
same drivers against real loop devices and file systems.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
from typing import Any

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.storage.probe import Allocation, StorageProbe

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "fixtures" / "connection_info"
GIB = 1 << 30


def connection_info(transport: str) -> dict[str, Any]:
    """A fresh copy of tests/fixtures/connection_info/<transport>.json."""
    return copy.deepcopy(json.loads((FIXTURES / f"{transport}.json").read_text()))


class FakeProbe:
    """Answers like StorageProbe, from what the test sets; records what was asked.

    Paths are what they are on disk (tests make real files); with
    ``as_block_device`` a /dev path that does not exist (the fixtures'
    device paths) stands for a block device; a path in ``missing`` is gone.
    """

    block_devices = False

    def __init__(self, size: int = GIB, allocated: int | None = None, direct_io: bool = True):
        self.size = size
        self.allocated = size if allocated is None else allocated
        self.direct_io = direct_io
        self.kind: str | None = None
        self.missing: set[str] = set()
        self.asked: list[tuple[str, str]] = []

    def allocation(self, path: str) -> Allocation:
        self.asked.append(("allocation", path))
        return Allocation(self.size, self.allocated, self.allocated >= self.size)

    def supports_direct_io(self, path: str) -> bool:
        self.asked.append(("direct_io", path))
        return self.direct_io

    def fs_type(self, path: str) -> str:
        return "nfs4"

    def storage_kind(self, path: str) -> str | None:
        self.asked.append(("storage_kind", path))
        return self.kind

    def is_block_device(self, path: str) -> bool:
        return True

    def source_type(self, path: str) -> str:
        self.asked.append(("source_type", path))
        if path in self.missing:
            raise exception.DiskNotFound(disk=path, reason="no such file or device")
        if self.block_devices and path.startswith("/dev/") and not os.path.lexists(path):
            return "block"
        return StorageProbe().source_type(path)


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
def as_block_device(monkeypatch):
    """Make every path look like a block device to the stand-in probe."""
    monkeypatch.setattr(FakeProbe, "block_devices", True)
