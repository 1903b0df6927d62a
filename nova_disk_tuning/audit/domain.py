"""The audit of one guest: each disk measured, checked against the safety rules and the policy."""

from __future__ import annotations

import copy
import os

from lxml import etree
from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import domxml, exception
from nova_disk_tuning.audit.findings import (
    AUDITED_DEVICES,
    BUS_BY_PREFIX,
    GUEST,
    DiskSource,
    Finding,
    Measure,
    unaudited,
)
from nova_disk_tuning.policy import safety
from nova_disk_tuning.policy.decide import DiskTuning, GuestTuning, tune_guest
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps
from nova_disk_tuning.policy.measure import measure_network

LOG = logging.getLogger(__name__)


# Nova writes the flavor into each domain's metadata; the IOThread count its
# driver chose came from the flavor's extra specs, so the audit reads them too.
NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
_EXTRA_SPECS = "/".join(
    ["metadata", *(f"{{{NOVA_NS}}}{tag}" for tag in ("instance", "flavor", "extraSpecs"))]
)


def nova_extra_specs(root: etree._Element) -> dict[str, str]:
    """The flavor extra specs Nova recorded in a domain's metadata ({} when none)."""
    return {
        name: node.text or ""
        for node in root.iterfind(f"{_EXTRA_SPECS}/{{{NOVA_NS}}}extraSpec")
        if (name := node.get("name"))
    }


# The audit of one guest ----------------------------------------------------------


class GuestAudit:
    def __init__(
        self,
        guest: domxml.LibvirtConfigGuest,
        root: etree._Element,
        caps: HostCaps,
        conf: cfg.ConfigOpts,
        measure: Measure,
    ) -> None:
        self.guest = guest
        self.domain = guest.name or "<unnamed>"
        self.caps = caps
        self.conf = conf
        self.measure = measure
        self.disks = [
            d
            for d in guest.devices
            if isinstance(d, domxml.LibvirtConfigGuestDisk) and d.source_device in AUDITED_DEVICES
        ]
        self.elements = {
            target.get("dev"): element
            for element in root.iterfind("devices/disk")
            if (target := element.find("target")) is not None
        }
        self.extra_specs = nova_extra_specs(root)

    def plan(self) -> tuple[GuestTuning, list[DiskFacts], dict[str, tuple[str, str]]]:
        """What the policy decides for this domain's disks, measured now.

        Returns the tuning, the facts (placeholders for disks that cannot be
        measured) and, per such disk, (rule, why).
        """
        facts: list[DiskFacts] = []
        problems: dict[str, tuple[str, str]] = {}
        for index, disk in enumerate(self.disks):
            source = _source(disk, index)
            measured, problem = self._facts(source)
            facts.append(measured)
            if problem:
                problems[source.name] = problem
        # Unmeasured disks take part too: the IOThread plan numbers all of them.
        try:
            plan = tune_guest(facts, self.caps, self.conf, self.guest.vcpus or 1, self.extra_specs)
        except exception.InvalidFlavorExtraSpec as exc:
            LOG.warning("Domain %s: ignoring its flavor's extra spec: %s", self.domain, exc)
            plan = tune_guest(facts, self.caps, self.conf, self.guest.vcpus or 1)
        return plan, facts, problems

    def run(self) -> list[Finding]:
        sources = [_source(disk, index) for index, disk in enumerate(self.disks)]
        plan, facts, problems = self.plan()
        findings = self._guest_findings(plan)
        for disk, source, measured in zip(self.disks, sources, facts, strict=True):
            if source.name in problems:
                findings.append(unaudited(self.domain, source.name, *problems[source.name]))
            else:
                findings.extend(self._disk_findings(disk, measured, plan))
        LOG.info("Audited domain %s: %d finding(s)", self.domain, len(findings))
        return findings

    def _facts(self, source: DiskSource) -> tuple[DiskFacts, tuple[str, str] | None]:
        """Measured facts, or placeholder facts and (rule, why) it cannot be audited."""
        if source.source_type == "network":
            # QEMU's own client: nothing on this host to measure.
            network = measure_network(
                source.name,
                format=source.format or "raw",
                bus=source.bus,
                shareable=source.shareable,
                driver="audit",
            )
            return network, None
        # What the XML says, for the plan of the other disks; nothing measured.
        placeholder = DiskFacts(
            name=source.name,
            source_type=source.source_type,
            format=source.format or "raw",
            path=source.path or "(no source)",
            bus=source.bus,
            shareable=source.shareable,
        )
        if source.path is None:
            return placeholder, ("cannot-audit", "cannot audit: the disk has no source path")
        if not os.path.exists(source.path):
            return placeholder, (
                "path-missing",
                f"cannot audit: path missing: {source.path} does not exist on this host; "
                "run the audit on the host that runs the domain",
            )
        try:
            return self.measure(source), None
        except (exception.NovaDiskTuningException, OSError) as exc:
            LOG.warning("Domain %s, disk %s: cannot measure: %s", self.domain, source.name, exc)
            return placeholder, ("cannot-audit", f"cannot audit: measuring failed: {exc}")

    # Guest-level -------------------------------------------------------------

    def _guest_findings(self, plan: GuestTuning) -> list[Finding]:
        defined = self.guest.iothreads or len(self.guest.iothread_ids)
        if not defined or self._bound_devices():
            return []
        wanted = plan.iothreads.thread_count
        fix = "bind the disks (see their findings)" if wanted else "remove <iothreads>"
        return [
            Finding(
                self.domain,
                GUEST,
                "slow",
                "idle-iothreads",
                f"{defined} IOThread(s) defined but no disk or controller is bound to one "
                f"(Nova 33's default): they do nothing; {fix}",
                current=f"<iothreads>{defined}</iothreads>",
                suggested=_iothreads_element(wanted),
                reason=plan.iothreads.count.reason,
            )
        ]

    def _bound_devices(self) -> bool:
        for device in self.guest.devices:
            if getattr(device, "driver_iothread", None) is not None:
                return True
            if getattr(device, "driver_iothread_queues", None):
                return True
        return False

    # Disk-level --------------------------------------------------------------

    def _disk_findings(
        self, disk: domxml.LibvirtConfigGuestDisk, facts: DiskFacts, plan: GuestTuning
    ) -> list[Finding]:
        policy = plan.disk(facts.name)
        cache, io = disk.driver_cache, disk.driver_io
        checks: list[tuple[str, str, str | None]] = [
            ("unsafe", "native-without-direct-cache",
             safety.native_without_direct_cache(io, cache)),
            ("unsafe", "direct-cache-without-o-direct",
             safety.direct_cache_without_o_direct(cache, facts)),
            ("unsafe", "native-on-sparse-file", safety.native_on_sparse_file(io, facts)),
            ("inconsistent", "discard-unmap-preallocated", self._trim(disk, facts, policy)),
            ("slow", "threads-on-preallocated", _threads_on_preallocated(disk, facts, policy)),
            ("slow", "writethrough-cache", _writethrough(disk, policy)),
            ("slow", "no-iothread", self._no_iothread(disk, facts, policy)),
        ]  # fmt: skip
        found = [(severity, rule, message) for severity, rule, message in checks if message]
        if not found:
            return []
        current = self._current_driver(facts.name)
        suggested = _suggested_driver(disk, policy)
        reason = "; ".join(
            f"{name}: {d.reason}"
            for name, d in policy.settings()
            if name in ("cache", "io", "discard", "discard_no_unref", "iothread")
        )
        results = []
        iothreads = plan.iothreads
        for severity, rule, message in found:
            fragment = suggested
            if rule == "no-iothread" and (self.guest.iothreads or 0) < iothreads.thread_count:
                # The binding needs the IOThread to exist.
                fragment = f"{suggested}\n{_iothreads_element(iothreads.thread_count)}"
            results.append(
                Finding(self.domain, facts.name, severity, rule, message, current, fragment, reason)
            )
        return results

    def _trim(
        self, disk: domxml.LibvirtConfigGuestDisk, facts: DiskFacts, policy: DiskTuning
    ) -> str | None:
        problem = safety.trim_unpreallocates(
            disk.driver_discard, disk.driver_discard_no_unref, facts
        )
        chosen = (policy.discard.value, policy.discard_no_unref.value)
        if problem is None or chosen == (disk.driver_discard, disk.driver_discard_no_unref):
            # The configuration asks for unmap and nothing can keep the
            # allocation here: the policy's reason says what was given up.
            return None
        return problem

    def _no_iothread(
        self, disk: domxml.LibvirtConfigGuestDisk, facts: DiskFacts, policy: DiskTuning
    ) -> str | None:
        if facts.bus != "virtio" or disk.driver_iothread is not None:
            return None
        if disk.driver_iothread_queues:
            return None
        if policy.iothread.value is None and not policy.iothread_queues.value:
            return None
        message = (
            f"virtio disk not bound to an IOThread ({self.guest.vcpus or 1} vCPUs): its I/O "
            "runs in QEMU's main loop, shared with device emulation"
        )
        if self.guest.iothreads:
            message += f"; the guest defines {self.guest.iothreads} IOThread(s) it does not use"
        return message

    def _current_driver(self, name: str) -> str | None:
        element = self.elements.get(name)
        driver = None if element is None else element.find("driver")
        return None if driver is None else _tostring(driver)


# Rules that compare with the policy's choice ---------------------------------------


def _threads_on_preallocated(
    disk: domxml.LibvirtConfigGuestDisk, facts: DiskFacts, policy: DiskTuning
) -> str | None:
    if disk.driver_io not in (None, "threads") or not safety.is_direct(disk.driver_cache):
        return None
    if policy.io.value not in ("native", "io_uring"):
        return None
    if facts.source_type == "block":
        what = f"block device {facts.path}"
    elif facts.source_type == "file" and facts.allocation_covers_size:
        what = f"fully allocated {facts.path}"
    else:
        return None
    io = disk.driver_io or "unset (QEMU's default: threads)"
    return (
        f"io={io} on {what} with cache {disk.driver_cache}: nothing allocates on write, so "
        f"{policy.io.value} AIO is safe and faster (no thread pool hand-off)"
    )


def _writethrough(disk: domxml.LibvirtConfigGuestDisk, policy: DiskTuning) -> str | None:
    if disk.driver_cache != "writethrough" or policy.cache.value == "writethrough":
        return None
    return (
        "cache writethrough flushes after every write (a 3 GiB convert here: 10.6 s vs "
        f"2.8 s writeback); the policy chooses {policy.cache.value}"
    )


# Helpers -------------------------------------------------------------------------


def _source(disk: domxml.LibvirtConfigGuestDisk, index: int) -> DiskSource:
    name = disk.target_dev or f"disk{index}"
    bus = disk.target_bus or BUS_BY_PREFIX.get(name[:2], "ide")
    return DiskSource(
        name=name,
        source_type=disk.source_type,
        path=disk.source_path,
        format=disk.driver_format,
        bus=bus,
        shareable=bool(disk.shareable),
    )


def _suggested_driver(disk: domxml.LibvirtConfigGuestDisk, policy: DiskTuning) -> str | None:
    tuned = copy.deepcopy(disk)
    policy.apply(tuned)
    try:
        driver = tuned.format_dom().find("driver")
    except exception.NovaDiskTuningException as exc:
        # Something else in this disk's XML does not validate; the finding stands.
        return f"(cannot render the disk: {exc})"
    return None if driver is None else _tostring(driver)


def _iothreads_element(count: int) -> str | None:
    return None if not count else f"<iothreads>{count}</iothreads>"


def _tostring(element: etree._Element) -> str:
    element = copy.deepcopy(element)
    element.tail = None
    return etree.tostring(element, encoding="unicode").strip()
