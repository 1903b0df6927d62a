"""``nova-disk-tuning audit``: check existing domains' disks against the policy.

The logic is :mod:`nova_disk_tuning.audit`; this module parses
the command line, measures disks the way ``explain`` does, and prints the
findings as a table or JSON. Exit codes are part of the interface (scripts
and monitoring use them): see ``EPILOG``.
"""

from __future__ import annotations

import argparse
import sys

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import audit, exception
from nova_disk_tuning.cmd import common
from nova_disk_tuning.host import Host
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.policy import measure
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps
from nova_disk_tuning.storage.probe import StorageProbe

LOG = logging.getLogger(__name__)

EXIT_CLEAN = 0
# 1 is what every nova-disk-tuning command returns on an error.
EXIT_ERROR = 1
EXIT_FINDINGS = 3
COLUMNS = ("domain", "disk", "severity", "finding", "suggested")

EPILOG = f"""\
severities:
  unsafe        QEMU refuses to start or open the disk, or native AIO on a sparse file
  inconsistent  guest TRIM would make a preallocated disk sparse again
  slow          the policy would choose faster settings (io, cache, IOThread binding)
  unaudited     the disk cannot be measured here (path missing, qemu-img failed)

exit status:
  {EXIT_CLEAN}  no findings
  {EXIT_ERROR}  error: unreadable or invalid XML file, libvirt connection failure, unknown --domain
  {EXIT_FINDINGS}  at least one finding (any severity)
  2  command-line usage error
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="Check the disks of libvirt domains against the tuning policy.",
        description="Read every domain on the libvirt connection (or the domain XML files "
        "given), measure each disk on this host (allocation, O_DIRECT, block or file, qcow2 "
        "virtual size) and report settings that are unsafe, inconsistent or slower than what "
        "the policy would choose, each with the <driver> or <iothreads> element it would "
        "render.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "files",
        nargs="*",
        metavar="DOMAIN_XML_FILE",
        help="Domain XML files (virsh dumpxml NAME) to audit instead of the connection's domains.",
    )
    parser.add_argument(
        "--connect",
        metavar="URI",
        help="libvirt URI (default: [libvirt] connection_uri). With files, used only for "
        "the libvirt and QEMU versions.",
    )
    parser.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="NAME",
        help="Audit only this domain of the connection (repeatable).",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.set_defaults(func=audit_command)


def audit_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    if args.files and args.domain:
        raise exception.InvalidConfig(reason="give DOMAIN_XML_FILEs or --domain, not both")
    if args.connect:
        conf.set_override("connection_uri", args.connect, group="libvirt")
    measure_disk = measurer(conf)
    # Listing domains and reading their XML needs no write access.
    with Host(conf, read_only=True) as host:
        if args.files:
            caps = _file_audit_caps(host, explicit=bool(args.connect))
            report = audit.audit_files(args.files, caps, conf, measure_disk)
        else:
            report = audit.audit_connection(host, conf, measure_disk, args.domain)
    render(report, as_json=args.json)
    return EXIT_FINDINGS if report.findings else EXIT_CLEAN


def _file_audit_caps(host: Host, explicit: bool) -> HostCaps:
    """Versions from the connection when there is one; files need none.

    Without a daemon (the default qemu:///system on a host without libvirtd)
    the versions are unknown: version-gated features count as unavailable and
    everything else is still audited. An explicit ``--connect`` must work.
    """
    try:
        return host.caps()
    except exception.HypervisorError as exc:
        if explicit:
            raise
        print(
            f"note: libvirt and QEMU versions unknown ({host.uri}: not reachable); "
            "findings that depend on them are left out. Use --connect URI to give them.",
            file=sys.stderr,
        )
        LOG.debug("No connection for the file audit: %s", exc)
        return host.caps_without_connection()


def measurer(conf: cfg.ConfigOpts) -> audit.Measure:
    """Measure a disk exactly as ``explain`` does (one probe cache per run)."""
    probe = StorageProbe()
    qemu_img = QemuImg(conf, probe=probe)

    def measure_source(source: audit.DiskSource) -> DiskFacts:
        return measure.measure_local(
            source.path or "",
            name=source.name,
            probe=probe,
            qemu_img=qemu_img,
            format=source.format,
            source_type=source.source_type,
            bus=source.bus,
            shareable=source.shareable,
            driver="audit",
        )

    return measure_source


def render(report: audit.AuditReport, as_json: bool = False) -> None:
    if as_json:
        common.print_json(report.to_dict())
        return
    count = len(report.domains)
    if not report.findings:
        print(f"No findings: {count} domain(s) audited against the tuning policy.")
        return
    summary = ", ".join(f"{n} {sev}" for sev, n in report.summary().items() if n)
    rows = [
        (f.domain, f.disk, f.severity, f"{f.rule}: {f.message}", f.suggested or "-")
        for f in report.findings
    ]
    common.print_table(f"Disk audit of {count} domain(s): {summary}", COLUMNS, rows)
