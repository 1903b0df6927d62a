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
import stat
from types import SimpleNamespace
from typing import Any

import pytest

from nova_disk_tuning.storage.probe import Allocation

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "fixtures" / "connection_info"
GIB = 1 << 30


def connection_info(transport: str) -> dict[str, Any]:
    """A fresh copy of tests/fixtures/connection_info/<transport>.json."""
    return copy.deepcopy(json.loads((FIXTURES / f"{transport}.json").read_text()))


class FakeProbe:
    """Answers like StorageProbe, from what the test sets; records what was asked."""

    def __init__(self, size: int = GIB, allocated: int | None = None, direct_io: bool = True):
        self.size = size
        self.allocated = size if allocated is None else allocated
        self.direct_io = direct_io
        self.kind: str | None = None
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


def block_stat(path: str) -> Any:
    """What os.stat says about a block device (a loop device number nobody maps to dm)."""
    return SimpleNamespace(st_mode=stat.S_IFBLK | 0o660, st_rdev=os.makedev(7, 250))


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
def as_block_device(monkeypatch):
    """Make every path look like a block device to the block drivers."""
    from nova_disk_tuning.virt.libvirt.volume import block

    monkeypatch.setattr(block.LibvirtBlockVolumeDriver, "_stat", staticmethod(block_stat))
