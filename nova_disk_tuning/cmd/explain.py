"""``nova-disk-tuning explain``: the settings the policy picks for disks, and why.

For disks named on the command line, the command measures the facts itself
(block device or file, allocation, O_DIRECT at the path, the storage kind)
exactly as an image backend would, asks libvirt for the host's capabilities
and prints every decision with its reason. :func:`explanation_rows` and
:func:`render_explanation` take a finished
:class:`~nova_disk_tuning.policy.decide.GuestTuning`, so explaining a
defined instance reuses them unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import audit, exception
from nova_disk_tuning.agent import loader
from nova_disk_tuning.cmd import common
from nova_disk_tuning.cmd.audit import measurer
from nova_disk_tuning.common.versions import format_version
from nova_disk_tuning.domxml.targets import TargetNames
from nova_disk_tuning.host import Host
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.policy import measure
from nova_disk_tuning.policy.decide import GuestTuning, tune_guest
from nova_disk_tuning.policy.facts import DiskFacts
from nova_disk_tuning.storage.probe import StorageProbe

LOG = logging.getLogger(__name__)

COLUMNS = ("disk", "setting", "value", "reason")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="Show the cache/io/discard/IOThread settings chosen for disks, and why.",
        description="Measure each --disk, decide its libvirt <driver> settings with the "
        "configured policy, and print every setting with its reason; or, given an instance "
        "NAME, print the settings its disks got at spawn (for a domain not made here, such as "
        "one Nova defined: what the policy decides for its disks, measured now).",
    )
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="An instance made by `spawn` (the tuning it got), or a libvirt domain name or "
        "UUID, e.g. one Nova defined (its disks measured now), instead of --disk.",
    )
    parser.add_argument(
        "--disk",
        action="append",
        metavar="SPEC",
        help="path=PATH[,name=vda][,format=raw|qcow2][,type=file|block][,bus=virtio|scsi|sata]"
        "[,volume=DRIVER][,shareable] (repeatable). format and type are detected when "
        "omitted, and whether the disk is preallocated is measured; volume=iscsi (any "
        "volume driver) explains the disk as a volume that driver attached.",
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
        try:
            tuning, facts = common.compute_driver(conf).get_tuning(args.name)
        except exception.InstanceNotFound:
            # Not one of ours: a domain someone else defined (Nova's
            # instance-0000002a, or its UUID), measured now.
            tuning, facts = _domain_tuning(args.name, conf)
        render_explanation(tuning, facts, as_json=args.json)
        return 0
    if not args.disk:
        raise exception.InvalidConfig(
            reason="explain needs an instance NAME or at least one --disk SPEC"
        )
    specs = [parse_disk_spec(text) for text in args.disk]
    extra_specs = common.parse_extra_specs(args.extra_spec)
    facts = measure_specs(specs, conf)
    # Versions are all explain needs: a read-only connection works for
    # users outside the libvirt group.
    with Host(conf, read_only=True) as host:
        caps = host.caps()
    tuning = tune_guest(facts, caps, conf, args.vcpus, extra_specs)
    render_explanation(tuning, facts, as_json=args.json)
    return 0


# --disk -------------------------------------------------------------------------

SPEC_KEYS = ("path", "name", "format", "type", "bus", "volume")
SPEC_FLAGS = ("shareable",)
# Accepted and ignored: whether a disk is preallocated is measured now.
SPEC_IGNORED_FLAGS = ("preallocated",)


@dataclasses.dataclass(frozen=True)
class DiskSpec:
    """One ``--disk`` argument: what the operator said; the rest is measured."""

    path: str
    name: str | None = None
    format: str | None = None
    type: str | None = None
    bus: str = "virtio"
    shareable: bool = False
    # A volume driver's name (driver_volume_type): the disk is a volume it
    # attached, with that driver's AIO preference.
    volume: str | None = None


def parse_disk_spec(text: str) -> DiskSpec:
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep and key in SPEC_FLAGS:
            values[key] = True
        elif not sep and key in SPEC_IGNORED_FLAGS:
            LOG.warning("--disk %s: %r is measured now; the flag is ignored", text, key)
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


def measure_specs(specs: Sequence[DiskSpec], conf: cfg.ConfigOpts) -> list[DiskFacts]:
    """Each ``--disk`` measured as every disk is; unnamed ones get the next free target."""
    probe = StorageProbe()
    qemu_img = QemuImg(conf, probe=probe)
    targets = TargetNames()
    for spec in specs:
        if spec.name is not None:
            targets.take(spec.name)
    facts = []
    for spec in specs:
        measured = measure.measure_local(
            spec.path,
            name=spec.name or targets.next(spec.bus),
            probe=probe,
            qemu_img=qemu_img,
            format=spec.format,
            source_type=spec.type,
            bus=spec.bus,
            shareable=spec.shareable,
            driver="explain",
        )
        if spec.volume is not None:
            # The volume driver's own hint (a third-party driver may have one).
            info = {"driver_volume_type": spec.volume, "data": {}}
            driver = loader.volume_driver(spec.volume)(conf, probe, qemu_img)
            measured = measure.as_volume(measured, info, driver.aio_hint(info))
        facts.append(measured)
    return facts


def _domain_tuning(name: str, conf: cfg.ConfigOpts) -> tuple[GuestTuning, list[DiskFacts]]:
    with Host(conf, read_only=True) as host:
        xml = audit.domain_xml(host, name)
        if xml is None:
            raise exception.InvalidConfig(
                reason=f"{name} is neither an instance made by spawn nor a domain (name or "
                f"UUID) at {host.uri}; see `nova-disk-tuning list` and `virsh list --all`"
            )
        return audit.plan_xml(xml, host.caps(), conf, measurer(conf))


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
        data["facts"] = [f.to_dict() for f in facts]
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
