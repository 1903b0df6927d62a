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
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.cmd import common
from nova_disk_tuning.cmd.audit import measurer
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.storage.probe import StorageProbe
from nova_disk_tuning.virt.libvirt import audit, measure
from nova_disk_tuning.virt.libvirt.host import Host
from nova_disk_tuning.virt.libvirt.tuning.facts import DiskFacts, format_version
from nova_disk_tuning.virt.libvirt.tuning.policy import GuestTuning, tune_guest

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
    specs = [measure.parse_disk_spec(text) for text in args.disk]
    extra_specs = common.parse_extra_specs(args.extra_spec)
    probe = StorageProbe()
    measured = measure.measure_disks(specs, probe, QemuImg(conf, probe=probe))
    facts = [measure.as_volume(f, spec, conf) for f, spec in zip(measured, specs, strict=True)]
    # Versions are all explain needs: a read-only connection works for
    # users outside the libvirt group.
    with Host(conf, read_only=True) as host:
        caps = host.caps()
    tuning = tune_guest(facts, caps, conf, args.vcpus, extra_specs)
    render_explanation(tuning, facts, as_json=args.json)
    return 0


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
