"""What an audit reports: the disk it looked at, each finding, the whole report."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nova_disk_tuning.policy.facts import DiskFacts

# Worst first: the order findings are summarised in.
SEVERITIES = ("unsafe", "inconsistent", "slow", "unaudited")
GUEST = "(guest)"
# Device kinds that are guest disks; cdroms and floppies carry no instance data.
AUDITED_DEVICES = ("disk", "lun")
# libvirt derives the bus from the target name when <target> has no bus.
BUS_BY_PREFIX = {"vd": "virtio", "sd": "scsi", "hd": "ide"}


@dataclass(frozen=True)
class DiskSource:
    """What a domain's XML says about one disk: the input to measuring it."""

    name: str
    source_type: str
    path: str | None
    # The XML's <driver type>; None when the XML does not say.
    format: str | None
    bus: str
    shareable: bool


Measure = Callable[[DiskSource], DiskFacts]


@dataclass(frozen=True)
class Finding:
    domain: str
    disk: str
    severity: str
    rule: str
    message: str
    current: str | None = None
    # The XML the policy would render instead; None when there is nothing to render.
    suggested: str | None = None
    # The policy's reasons for ``suggested``.
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AuditReport:
    domains: list[str] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, int]:
        counts = Counter(f.severity for f in self.findings)
        return {severity: counts[severity] for severity in SEVERITIES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "domains": self.domains,
            "findings": [f.to_dict() for f in self.findings],
            "summary": self.summary(),
        }


def unaudited(domain: str, disk: str, rule: str, message: str) -> Finding:
    return Finding(domain, disk, "unaudited", rule, message)
