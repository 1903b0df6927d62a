"""The discard decisions of the tuning policy: discard, discard_no_unref, detect_zeroes.

Part of :mod:`.policy`, which calls these once the cache and io of a disk are
decided (keeping a preallocated disk allocated depends on whether it got
native AIO).
"""

from __future__ import annotations

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning.common.versions import (
    DISCARD_NO_UNREF_LIBVIRT,
    format_version,
    short_version,
)
from nova_disk_tuning.policy.facts import Decision, DiskFacts, HostCaps

LOG = logging.getLogger(__name__)


def decide_discard(
    disk: DiskFacts, host: HostCaps, conf: cfg.ConfigOpts, io: str | None
) -> tuple[Decision, Decision]:
    requested = conf.libvirt.hw_disk_discard
    source = f"[libvirt] hw_disk_discard={requested}"
    if disk.is_volume and disk.discard is not None:
        requested, source = disk.discard, f"the volume requests discard={disk.discard}"
    if requested is None:
        nothing = "[libvirt] hw_disk_discard unset: guest discards are ignored"
        return Decision(None, nothing), Decision(None, "discard is not unmap")
    if requested == "ignore":
        return Decision("ignore", source), Decision(None, "discard is not unmap")
    # A guest TRIM punches holes in the host file: a preallocated disk (or one
    # that got native AIO for being fully allocated) becomes sparse again.
    keep = disk.preallocated or (disk.source_type == "file" and io == "native")
    if not keep:
        why = (
            "disk is not preallocated: nothing to keep allocated"
            if disk.source_type == "file"
            else f"{disk.source_type} disk: discard_no_unref is for qcow2 files"
        )
        return Decision("unmap", f"{source}: guest TRIM frees host space"), Decision(None, why)
    missing = []
    if disk.format != "qcow2":
        missing.append(f"format {disk.format} (discard_no_unref is qcow2 only)")
    if not host.discard_no_unref:
        missing.append(
            "libvirt version unknown"
            if host.libvirt_version is None
            else f"libvirt {format_version(host.libvirt_version)} < "
            f"{short_version(DISCARD_NO_UNREF_LIBVIRT)}"
        )
    if not conf.disk_tuning.discard_no_unref:
        missing.append("[disk_tuning] discard_no_unref=false")
    if not missing:
        return (
            Decision("unmap", f"{source}; discard_no_unref keeps the disk allocated"),
            Decision("on", "preallocated qcow2: guest TRIM zeroes clusters but keeps them"),
        )
    why = ", ".join(missing)
    LOG.info(
        "Disk %s: discard unmap on a preallocated disk without discard_no_unref (%s): "
        "guest TRIM will make it sparse again.",
        disk.name,
        why,
    )
    return (
        Decision(
            "unmap",
            f"{source}; gave up keeping this preallocated disk allocated: guest TRIM "
            "punches holes, making it sparse again (and native AIO unsafe)",
        ),
        Decision(None, f"not available: {why}"),
    )


def decide_detect_zeroes(conf: cfg.ConfigOpts, discard: str | None) -> Decision:
    value = conf.disk_tuning.detect_zeroes
    if value is None:
        return Decision(None, "[disk_tuning] detect_zeroes unset: QEMU's default (off)")
    if value == "unmap" and discard != "unmap":
        # libvirt rejects detect_zeroes='unmap' unless discard='unmap'.
        return Decision("on", "[disk_tuning] detect_zeroes=unmap lowered to on: discard not unmap")
    return Decision(value, f"[disk_tuning] detect_zeroes={value}")
