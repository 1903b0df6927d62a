"""Audit the disks of libvirt domains against the tuning policy.

For every disk of a domain the audit measures the facts the policy decides
from (allocation, O_DIRECT at the path, block or file, qcow2 virtual size),
asks :func:`~nova_disk_tuning.policy.decide.tune_guest` what it would
choose, and reports where the domain's own ``<driver>`` settings are

* ``unsafe``: a safety rule of :mod:`tuning_checks` is broken (QEMU refuses
  to start, cannot open the disk, or may block on metadata updates);
* ``inconsistent``: guest TRIM would undo the disk's preallocation, and the
  policy would render the disk differently;
* ``slow``: the policy would choose a faster setting (native AIO where
  nothing allocates, no writethrough, an IOThread the disk is bound to);
* ``unaudited``: the disk cannot be measured here (its path is missing,
  qemu-img fails, ...).

Each finding carries the fix as XML: the ``<driver>`` element the policy
renders for that disk (the parsed disk, copied, with the policy's decisions
applied) or the guest's ``<iothreads>`` element. The audit has no policy of
its own: a "slow" finding needs the policy to choose differently, so a
domain this plugin tuned from the same facts has no findings.

Measuring is injected (``measure``): the CLI measures like ``explain``
does, and tests can hand in facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lxml import etree
from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import domxml, exception
from nova_disk_tuning.audit.domain import GuestAudit
from nova_disk_tuning.audit.findings import (
    GUEST,
    SEVERITIES,
    AuditReport,
    DiskSource,
    Finding,
    Measure,
    unaudited,
)
from nova_disk_tuning.common import textfile
from nova_disk_tuning.host import Host
from nova_disk_tuning.policy.decide import GuestTuning
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps

__all__ = [
    "SEVERITIES",
    "AuditReport",
    "DiskSource",
    "Finding",
    "Measure",
    "audit_connection",
    "audit_files",
    "audit_xml",
    "plan_xml",
]

LOG = logging.getLogger(__name__)


# Entry points --------------------------------------------------------------------


def audit_connection(
    host: Host, conf: cfg.ConfigOpts, measure: Measure, names: Sequence[str] = ()
) -> AuditReport:
    """Audit every domain defined on ``host``'s connection (or only ``names``)."""
    import libvirt

    conn = host.get_connection()
    try:
        domains = {dom.name(): dom for dom in conn.listAllDomains(0)}
    except libvirt.libvirtError as exc:
        raise exception.HypervisorError(
            uri=host.uri, reason=f"listing domains failed: {exc.get_error_message() or exc}"
        ) from None
    unknown = sorted(set(names) - set(domains))
    if unknown:
        raise exception.InvalidConfig(
            reason=f"no domain {', '.join(unknown)} at {host.uri}; defined: "
            f"{', '.join(sorted(domains)) or 'none'}"
        )
    caps = host.caps()
    report = AuditReport()
    for name in sorted(names or domains):
        try:
            xml = domains[name].XMLDesc(0)
        except libvirt.libvirtError as exc:
            # Undefined while we looked: say so and go on with the others.
            report.domains.append(name)
            message = f"cannot audit: reading its XML failed: {exc}"
            report.findings.append(unaudited(name, GUEST, "cannot-audit", message))
            continue
        try:
            audited, findings = audit_xml(xml, caps, conf, measure)
        except exception.NovaDiskTuningException as exc:
            message = f"cannot audit: its XML does not parse: {exc}"
            audited, findings = name, [unaudited(name, GUEST, "cannot-audit", message)]
        report.domains.append(audited)
        report.findings.extend(findings)
    return report


def audit_files(
    paths: Iterable[str], caps: HostCaps, conf: cfg.ConfigOpts, measure: Measure
) -> AuditReport:
    """Audit domain XML files; a file that cannot be read or parsed is an error."""
    report = AuditReport()
    for path in paths:
        try:
            xml = textfile.read_bytes(path, "domain XML")
        except exception.InputUnreadable as exc:
            raise exception.InvalidConfig(reason=f"{exc}; pass a domain XML file") from None
        except OSError as exc:
            raise exception.InvalidConfig(
                reason=f"cannot read domain XML {path}: {exc.strerror}; check the path"
            ) from None
        try:
            name, findings = audit_xml(xml, caps, conf, measure)
        except exception.NovaDiskTuningException as exc:
            raise exception.InvalidConfig(
                reason=f"{path}: {exc}. Pass a libvirt domain XML (virsh dumpxml NAME)."
            ) from None
        report.domains.append(name)
        report.findings.extend(findings)
    return report


def audit_xml(
    xml: str | bytes, caps: HostCaps, conf: cfg.ConfigOpts, measure: Measure
) -> tuple[str, list[Finding]]:
    """Audit one domain XML; returns the domain's name and the findings."""
    guest, root = _parse(xml)
    return guest.name or "<unnamed>", GuestAudit(guest, root, caps, conf, measure).run()


def plan_xml(
    xml: str | bytes, caps: HostCaps, conf: cfg.ConfigOpts, measure: Measure
) -> tuple[GuestTuning, list[DiskFacts]]:
    """What the policy decides for a domain's disks (one Nova or anyone defined), measured now."""
    guest, root = _parse(xml)
    plan, facts, _problems = GuestAudit(guest, root, caps, conf, measure).plan()
    return plan, facts


def domain_xml(host: Host, name: str) -> str | None:
    """The XML of the domain named ``name`` (or with that UUID), None if there is none."""
    import libvirt

    conn = host.get_connection()
    for lookup in (conn.lookupByName, conn.lookupByUUIDString):
        try:
            xml: str = lookup(name).XMLDesc(0)
            return xml
        except libvirt.libvirtError:
            continue
    return None


def _parse(xml: str | bytes) -> tuple[domxml.LibvirtConfigGuest, etree._Element]:
    data = xml.encode() if isinstance(xml, str) else xml
    try:
        root = etree.fromstring(data)
    except etree.XMLSyntaxError as exc:
        raise exception.InvalidConfig(reason=f"not XML: {exc}") from None
    guest = domxml.LibvirtConfigGuest()
    guest.parse_dom(root)
    return guest, root
