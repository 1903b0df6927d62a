"""``nova-disk-tuning explain``: the settings the policy picks for disks, and why.

For disks named on the command line, the command measures the facts itself
(block device or file, allocation, O_DIRECT at the path, the storage kind)
exactly as an image backend would, asks libvirt for the host's capabilities
and prints every decision with its reason. :func:`explanation_rows` and
:func:`render_explanation` take a finished
:class:`~nova_disk_tuning.virt.libvirt.tuning.policy.GuestTuning`, so explaining a
defined instance reuses them unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import stat
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.cmd import common
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.storage.probe import StorageProbe, covers
from nova_disk_tuning.virt.libvirt import loader
from nova_disk_tuning.virt.libvirt.host import Host
from nova_disk_tuning.virt.libvirt.tuning.facts import DiskFacts, format_version
from nova_disk_tuning.virt.libvirt.tuning.policy import GuestTuning, tune_guest

COLUMNS = ("disk", "setting", "value", "reason")
SPEC_KEYS = ("path", "name", "format", "type", "bus", "volume")
SPEC_FLAGS = ("shareable", "preallocated")
QCOW2_MAGIC = b"QFI\xfb"


@dataclasses.dataclass(frozen=True)
class DiskSpec:
    """One ``--disk`` argument: what the operator said; the rest is measured."""

    path: str
    name: str | None = None
    format: str | None = None
    type: str | None = None
    bus: str = "virtio"
    shareable: bool = False
    preallocated: bool = False
    # A volume driver's name (driver_volume_type): the disk is a volume it
    # attached, with that driver's AIO preference.
    volume: str | None = None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="Show the cache/io/discard/IOThread settings chosen for disks, and why.",
        description="Measure each --disk, decide its libvirt <driver> settings with the "
        "configured policy, and print every setting with its reason; or, given an instance "
        "NAME, print the settings its disks got at spawn.",
    )
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="An instance made by `spawn`: show the tuning it got, instead of --disk.",
    )
    parser.add_argument(
        "--disk",
        action="append",
        metavar="SPEC",
        help="path=PATH[,name=vda][,format=raw|qcow2][,type=file|block][,bus=virtio|scsi|sata]"
        "[,volume=DRIVER][,shareable][,preallocated] (repeatable). format and type are "
        "detected when omitted; volume=iscsi (any volume driver) explains the disk as a "
        "volume that driver attached.",
    )
    parser.add_argument("--vcpus", type=int, default=1, help="vCPUs of the guest (queues).")
    parser.add_argument(
        "--extra-spec",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A flavor extra spec, e.g. hw:disk_iothreads=2 (repeatable).",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.set_defaults(func=explain_command)


def explain_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    if args.name is not None:
        if args.disk:
            raise exception.InvalidConfig(reason="give an instance NAME or --disk, not both")
        from nova_disk_tuning.cmd import instances

        return instances.explain_instance(args, conf)
    if not args.disk:
        raise exception.InvalidConfig(
            reason="explain needs an instance NAME or at least one --disk SPEC"
        )
    specs = [parse_disk_spec(text) for text in args.disk]
    extra_specs = _parse_extra_specs(args.extra_spec)
    probe = StorageProbe()
    qemu_img = QemuImg(conf, probe=probe)
    measured = measure_disks(specs, probe, qemu_img)
    facts = [as_volume(f, spec, conf) for f, spec in zip(measured, specs, strict=True)]
    # Versions are all explain needs: a read-only connection works for
    # users outside the libvirt group.
    with Host(conf, read_only=True) as host:
        caps = host.caps()
    tuning = tune_guest(facts, caps, conf, args.vcpus, extra_specs)
    render_explanation(tuning, facts, as_json=args.json)
    return 0


# Measuring ---------------------------------------------------------------------


def parse_disk_spec(text: str) -> DiskSpec:
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep and key in SPEC_FLAGS:
            values[key] = True
        elif sep and key in SPEC_KEYS and value:
            values[key] = value.strip()
        else:
            raise exception.InvalidConfig(
                reason=f"--disk {text!r}: cannot use {item!r}. Use key=value with key in "
                f"{', '.join(SPEC_KEYS)}, or the flags {', '.join(SPEC_FLAGS)}."
            )
    if "path" not in values:
        raise exception.InvalidConfig(reason=f"--disk {text!r} needs path=PATH")
    if values.get("type") not in (None, "file", "block"):
        raise exception.InvalidConfig(reason=f"--disk {text!r}: type must be file or block")
    return DiskSpec(**values)


def measure_disks(
    specs: Sequence[DiskSpec], probe: StorageProbe, qemu_img: QemuImg
) -> list[DiskFacts]:
    facts: list[DiskFacts] = []
    used: dict[str, int] = {}
    for spec in specs:
        name = spec.name
        if name is None:
            prefix = "vd" if spec.bus == "virtio" else "sd"
            name = prefix + "abcdefghijklmnopqrstuvwxyz"[used.get(prefix, 0) % 26]
            used[prefix] = used.get(prefix, 0) + 1
        facts.append(measure_disk(spec, name, probe, qemu_img))
    return facts


def measure_disk(spec: DiskSpec, name: str, probe: StorageProbe, qemu_img: QemuImg) -> DiskFacts:
    """The facts an image backend would report for this disk, measured now."""
    try:
        st = os.stat(spec.path)
    except FileNotFoundError:
        raise exception.InvalidDiskConfig(
            disk=spec.path, reason="no such file or device; check the path"
        ) from None
    is_block = stat.S_ISBLK(st.st_mode)
    if not is_block and not stat.S_ISREG(st.st_mode):
        raise exception.InvalidDiskConfig(
            disk=spec.path, reason="neither a regular file nor a block device"
        )
    source_type = "block" if is_block else "file"
    if spec.type is not None and spec.type != source_type:
        raise exception.InvalidDiskConfig(
            disk=spec.path, reason=f"type={spec.type} given, but it is a {source_type}"
        )
    fmt = spec.format or _sniff_format(spec.path)
    allocation = probe.allocation(spec.path)
    size, fully = allocation.size, allocation.fully_allocated
    backing = None
    if fmt != "raw":
        # The allocation must cover the *virtual* size (KubeVirt's rule),
        # which only qemu-img knows; its verdict is derived from the numbers.
        info = qemu_img.info(spec.path, fmt)
        size, backing = int(info.virtual_size), info.backing_file
        fully = covers(allocation.allocated, size)
    return DiskFacts(
        name=name,
        source_type=source_type,
        format=fmt,
        path=os.path.abspath(spec.path),
        size=size,
        allocated=allocation.allocated,
        fully_allocated=fully,
        backing_file=backing,
        shareable=spec.shareable,
        bus=spec.bus,
        driver="explain",
        direct_io=probe.supports_direct_io(spec.path),
        storage_kind=probe.storage_kind(spec.path),
        preallocated=spec.preallocated,
    )


def as_volume(facts: DiskFacts, spec: DiskSpec, conf: cfg.ConfigOpts) -> DiskFacts:
    """The facts of a volume that ``spec.volume``'s driver attached at this path."""
    if spec.volume is None:
        return facts
    driver = loader.volume_driver(spec.volume)(conf, StorageProbe())
    hint = driver.aio_hint({"driver_volume_type": spec.volume, "data": {}})
    return facts.replace(is_volume=True, aio_hint=hint, driver=spec.volume)


def _sniff_format(path: str) -> str:
    # Only the two formats instance disks use; anything else must be named.
    with open(path, "rb") as handle:
        return "qcow2" if handle.read(4) == QCOW2_MAGIC else "raw"


def _parse_extra_specs(items: Sequence[str]) -> dict[str, str]:
    specs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise exception.InvalidConfig(
                reason=f"--extra-spec {item!r}: use KEY=VALUE, e.g. hw:disk_iothreads=2"
            )
        specs[key.strip()] = value.strip()
    return specs


# Rendering ---------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A decision's value as shown in the table; ``-`` means nothing is emitted."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return " ".join(f"{k}:{','.join(str(q) for q in v)}" for k, v in value.items())
    return str(value)


def explanation_rows(tuning: GuestTuning) -> list[tuple[str, str, str, str]]:
    """(disk, setting, value, reason) rows: guest-level settings first."""
    plan = tuning.iothreads
    rows = [("(guest)", "iothreads", format_value(plan.count.value), plan.count.reason)]
    if plan.scsi_controller is not None:
        for setting in ("iothread", "queues"):
            decision = getattr(plan.scsi_controller, setting)
            rows.append(("(virtio-scsi)", setting, format_value(decision.value), decision.reason))
    for disk in tuning.disks:
        for setting, decision in disk.settings():
            rows.append((disk.disk, setting, format_value(decision.value), decision.reason))
    return rows


def explanation_dict(
    tuning: GuestTuning, facts: Sequence[DiskFacts] | None = None
) -> dict[str, Any]:
    data = tuning.to_dict()
    if facts is not None:
        data["facts"] = [dataclasses.asdict(f) for f in facts]
    return data


def render_explanation(
    tuning: GuestTuning, facts: Sequence[DiskFacts] | None = None, as_json: bool = False
) -> None:
    if as_json:
        common.print_json(explanation_dict(tuning, facts))
        return
    host = tuning.host
    uring = "usable" if host.io_uring else f"not usable ({host.io_uring_missing()})"
    title = (
        f"Disk tuning: libvirt {format_version(host.libvirt_version)}, "
        f"QEMU {format_version(host.qemu_version)}, io_uring {uring}"
    )
    common.print_table(title, COLUMNS, explanation_rows(tuning))
