"""The tuning policy's decision table, rendered as reStructuredText.

The table is not written by hand: :func:`render` runs
:func:`~nova_disk_tuning.policy.decide.tune_guest` over a fixed set of
situations (:data:`SCENARIOS`) on a fixed host (:data:`HOST`: this project's
reference Debian 12 host) and prints what it chose and why, so the document
cannot drift from the code. ``doc/source/tuning-rules.rst`` is its output;
a unit test fails when the committed file differs. Regenerate it with::

    python -m nova_disk_tuning.policy.rules > doc/source/tuning-rules.rst

(``make docs-rules``).
"""

from __future__ import annotations

import logging  # only to silence the policy's warnings in the __main__ script
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nova_disk_tuning import conf as ndt_conf
from nova_disk_tuning.common.units import GiB
from nova_disk_tuning.common.versions import (
    DISCARD_NO_UNREF_LIBVIRT,
    format_version,
    short_version,
)
from nova_disk_tuning.policy.decide import DiskTuning, tune_guest
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps

VCPUS = 4
INSTANCE = "/var/lib/nova/instances/INSTANCE"
DISK = f"{INSTANCE}/disk"
HOST = HostCaps(libvirt_version=(9, 0, 0), qemu_version=(7, 2, 0), kernel_io_uring=True)
# The first libvirt with discard_no_unref, for the one row that needs it.
HOST_NO_UNREF = HostCaps(
    libvirt_version=DISCARD_NO_UNREF_LIBVIRT, qemu_version=(8, 1, 0), kernel_io_uring=True
)
SETTINGS = ("cache", "io", "discard", "discard_no_unref", "iothread")


@dataclass(frozen=True)
class Scenario:
    situation: str
    disk: DiskFacts
    # {group: {option: value}} on top of the defaults.
    conf: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    host: HostCaps = HOST


def _file(**facts: Any) -> DiskFacts:
    values: dict[str, Any] = {"path": DISK, "size": 10 * GiB, "direct_io": True}
    values.update(facts)
    return DiskFacts(name="vda", source_type="file", **values)


def _block(path: str, **facts: Any) -> DiskFacts:
    return DiskFacts(name="vda", source_type="block", path=path, direct_io=True, **facts)


_SPARSE = {"allocated": 1 * GiB}
_FULL = {"allocated": 10 * GiB}
_QCOW2 = {"format": "qcow2", "backing_file": "/var/lib/nova/instances/_base/IMAGE"}
_NFS = {
    "path": "/var/lib/nova/mnt/SHARE/volume-ID",
    "size": None,
    "allocated": None,
    "is_volume": True,
    "driver": "nfs",
    "aio_hint": "native",
    "storage_kind": "nfs",
}
_UNMAP = {"libvirt": {"hw_disk_discard": "unmap"}}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("raw file, sparse (preallocate_images=none)", _file(**_SPARSE)),
    Scenario(
        "raw file, fully allocated (preallocate_images=space)",
        _file(**_FULL),
        {"DEFAULT": {"preallocate_images": "space"}},
    ),
    Scenario(
        "raw file, preallocate_images=space but fallocate did not happen",
        _file(**_SPARSE),
        {"DEFAULT": {"preallocate_images": "space"}},
    ),
    Scenario(
        "qcow2 overlay, sparse (preallocate_images=none)", _file(**_QCOW2, allocated=200 << 20)
    ),
    Scenario(
        "qcow2 overlay, sparse, io_uring disabled in the kernel (kernel.io_uring_disabled=2)",
        _file(**_QCOW2, allocated=200 << 20),
        host=HostCaps(
            libvirt_version=(9, 0, 0),
            qemu_version=(7, 2, 0),
            kernel_io_uring=False,
            kernel_io_uring_detail="kernel.io_uring_disabled=2",
        ),
    ),
    Scenario(
        "qcow2 overlay, preallocate_images=performance (allocation covers the virtual size)",
        _file(**_QCOW2, allocated=10 * GiB + (2 << 20)),
        {"DEFAULT": {"preallocate_images": "performance"}},
    ),
    Scenario("block device (LVM volume)", _block("/dev/nova/INSTANCE_disk", storage_kind="lvm")),
    Scenario(
        "network disk (rbd, QEMU's own client)",
        DiskFacts(name="vda", source_type="network", driver="rbd"),
    ),
    Scenario(
        "shareable (multi-attach) block volume, disk_cachemodes block=writeback",
        _block("/dev/disk/by-path/ISCSI-LUN", shareable=True, is_volume=True),
        {"libvirt": {"disk_cachemodes": ["block=writeback"]}},
    ),
    Scenario(
        "raw file where O_DIRECT does not work (tmpfs before Linux 6.6)",
        _file(**_FULL, direct_io=False),
    ),
    Scenario(
        "raw file, disk_cachemodes file=writeback",
        _file(**_FULL),
        {"libvirt": {"disk_cachemodes": ["file=writeback"]}},
    ),
    Scenario(
        "aio_mode=native forced, disk_cachemodes file=writeback",
        _file(**_FULL),
        {"libvirt": {"disk_cachemodes": ["file=writeback"]}, "disk_tuning": {"aio_mode": "native"}},
    ),
    Scenario("NFS volume (driver hint native, allocation not measured)", _file(**_NFS)),
    Scenario(
        "NFS volume, use_default_aio_mode_for_volumes=True (hint dropped)",
        _file(**_NFS),
        {"libvirt": {"use_default_aio_mode_for_volumes": True}},
    ),
    Scenario(
        "aio_mode=io_uring, raw file",
        _file(**_SPARSE),
        {"disk_tuning": {"aio_mode": "io_uring"}},
    ),
    Scenario(
        "aio_mode=io_uring, LVM volume (denylisted)",
        _block("/dev/nova/INSTANCE_disk", storage_kind="lvm"),
        {"disk_tuning": {"aio_mode": "io_uring"}},
    ),
    Scenario(
        "hw_disk_discard=unmap, sparse raw file",
        _file(**_SPARSE),
        _UNMAP,
    ),
    Scenario(
        "hw_disk_discard=unmap, preallocated raw file",
        _file(**_FULL),
        {**_UNMAP, "DEFAULT": {"preallocate_images": "space"}},
    ),
    Scenario(
        "hw_disk_discard=unmap, preallocated qcow2, libvirt "
        + short_version(DISCARD_NO_UNREF_LIBVIRT),
        _file(**_QCOW2, allocated=10 * GiB + (2 << 20)),
        {**_UNMAP, "DEFAULT": {"preallocate_images": "performance"}},
        HOST_NO_UNREF,
    ),
    Scenario("SATA disk (no IOThread possible)", _file(**_FULL, bus="sata")),
    Scenario("iothreads=0", _file(**_FULL), {"disk_tuning": {"iothreads": 0}}),
)


def decide_scenario(scenario: Scenario) -> DiskTuning:
    """What the policy chooses for one scenario's disk (in a guest of its own)."""
    conf = ndt_conf.new_conf(overrides=scenario.conf)
    return tune_guest([scenario.disk], scenario.host, conf, VCPUS).disk(scenario.disk.name)


# This module and the policy's, named from the code so the text cannot drift.
MODULE: str = __spec__.name if __spec__ is not None else __name__
POLICY_MODULE: str = tune_guest.__module__


def source_path(module: str) -> str:
    """``nova_disk_tuning/policy/rules.py`` for ``nova_disk_tuning.policy.rules``."""
    return module.replace(".", "/") + ".py"


def render() -> str:
    lines = [
        f".. This file is generated by {source_path(MODULE)}: do not edit it.",
        "   Regenerate it with `make docs-rules`, i.e.",
        f"   python -m {MODULE} > doc/source/tuning-rules.rst",
        "",
        "============",
        "Tuning rules",
        "============",
        "",
        f"What the tuning policy (``{source_path(POLICY_MODULE)}``) chooses for",
        "one disk in typical situations, and the reason it gives (``nova-disk-tuning",
        "explain`` prints the same reasons for real disks). Every row is the output of the",
        f"policy for a 10 GiB disk in a guest with {VCPUS} vCPUs, with the default",
        "configuration except for the options named, on a host with "
        f"libvirt {format_version(HOST.libvirt_version)},",
        f"QEMU {format_version(HOST.qemu_version)} and a kernel that allows io_uring,",
        "unless the row says otherwise. ``-`` means the attribute is not emitted.",
        "",
        *_table_head("30 10 10 10 10 30"),
        "     - Reasons",
    ]
    for scenario in SCENARIOS:
        lines.extend(_row(scenario, decide_scenario(scenario)))
    return "\n".join(lines) + "\n"


def _table_head(widths: str | None) -> list[str]:
    """The list-table directive and its header row (Situation and the settings)."""
    head = [".. list-table::", "   :header-rows: 1"]
    if widths:
        head.append(f"   :widths: {widths}")
    settings = (f"     - {name}" for name in ("cache", "io", "discard", "iothread"))
    return [*head, "", "   * - Situation", *settings]


SUMMARY_START = ".. tuning-rules-summary: generated by rules.render_summary(), do not edit"
SUMMARY_END = ".. end of tuning-rules-summary"


def render_summary() -> str:
    """The decision table without reasons, for the README (checked by a test)."""
    lines = [
        SUMMARY_START,
        "",
        *_table_head(None),
    ]
    for scenario in SCENARIOS:
        lines.extend(_cells(scenario, decide_scenario(scenario)))
    lines += ["", SUMMARY_END]
    return "\n".join(lines) + "\n"


def with_summary(readme: str) -> str:
    """``readme`` with the block between the summary markers regenerated."""
    start = readme.index(SUMMARY_START)
    end = readme.index(SUMMARY_END, start) + len(SUMMARY_END) + 1
    return readme[:start] + render_summary() + readme[end:]


def _cells(scenario: Scenario, tuning: DiskTuning) -> list[str]:
    discard = _value(tuning.discard.value)
    if tuning.discard_no_unref.value is not None:
        discard += f" + discard_no_unref={tuning.discard_no_unref.value}"
    return [
        f"   * - {_escape(scenario.situation)}",
        f"     - {_value(tuning.cache.value)}",
        f"     - {_value(tuning.io.value)}",
        f"     - {discard}",
        f"     - {_value(tuning.iothread.value)}",
    ]


def _row(scenario: Scenario, tuning: DiskTuning) -> list[str]:
    row = _cells(scenario, tuning)
    reasons = [(name, d.reason) for name, d in tuning.settings() if name in SETTINGS]
    first, *rest = reasons
    row.append(f"     - * {first[0]}: {_escape(first[1])}")
    row.extend(f"       * {name}: {_escape(reason)}" for name, reason in rest)
    return row


def _value(value: object) -> str:
    return "``-``" if value is None else f"``{value}``"


def _escape(text: str) -> str:
    # Situations and reasons are plain text: keep RST from reading markup
    # (emphasis, literals, substitutions, ``name_`` references) into them.
    for char in ("\\", "*", "`", "|"):
        text = text.replace(char, "\\" + char)
    return re.sub(r"_(?=\W|$)", r"\_", text)


if __name__ == "__main__":
    # The scenarios include demoted and ignored settings on purpose: their
    # warnings are the reasons in the table, not problems of this run.
    logging.disable(logging.WARNING)
    if sys.argv[1:2] == ["--readme"]:
        # Rewrite the summary in the README named next, in place.
        with open(sys.argv[2], encoding="utf-8") as handle:
            text = with_summary(handle.read())
        with open(sys.argv[2], "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(render())
