"""Apply the project's policy to a guest config Nova built, and say why in the log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning.nova import render
from nova_disk_tuning.nova.disks import Skipped
from nova_disk_tuning.policy.decide import GuestTuning, tune_guest
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps
from nova_disk_tuning.policy.result import DiskTuning

LOG = logging.getLogger(__name__)


def tune_config(
    guest: Any,
    facts: Sequence[DiskFacts],
    skipped: Sequence[Skipped],
    host: HostCaps,
    conf: cfg.ConfigOpts,
    extra_specs: Mapping[str, str] | None,
    instance: Any = None,
) -> GuestTuning | None:
    """Tune ``guest`` (a ``LibvirtConfigGuest``) in place; None when nothing was measured.

    Skipped disks keep every setting Nova gave them. IOThreads are
    re-planned only when at least one disk was measured: otherwise the
    guest keeps Nova's ``<iothreads>`` and pins.
    """
    for item in skipped:
        LOG.warning(
            "Disk %s keeps Nova's settings: it could not be measured (%s)",
            item.target,
            item.reason,
            instance=instance,
        )
    if not facts:
        return None
    # Decided in full before anything is changed: a failure leaves Nova's config as built.
    tuning = tune_guest(facts, host, conf, max(int(guest.vcpus or 1), 1), extra_specs)
    for index, device in enumerate(guest.devices):
        guest.devices[index] = render.adopt(device)
    tuning.apply_to_guest(guest)
    _pin_iothreads(guest, tuning.iothreads.thread_count)
    for disk in tuning.disks:
        LOG.info("Disk %s: %s", disk.disk, describe(disk), instance=instance)
    LOG.info(
        "IOThreads: %s (%s)",
        tuning.iothreads.count.value,
        tuning.iothreads.count.reason,
        instance=instance,
    )
    return tuning


def describe(disk: DiskTuning) -> str:
    """``cache=none (reason); io=native (reason); ...`` for the log."""
    return "; ".join(
        f"{name}={'(none)' if d.value is None else d.value} ({d.reason})"
        for name, d in disk.settings()
    )


def _pin_iothreads(guest: Any, count: int) -> None:
    """One ``<iothreadpin>`` per IOThread, on the CPUs Nova pins the emulator to.

    Nova pins only IOThread 1 (its only one) when the guest has dedicated
    CPUs; every IOThread the plan defines needs the same pin, and none may
    name an IOThread that no longer exists.
    """
    cputune = getattr(guest, "cputune", None)
    if cputune is None or not getattr(cputune, "iothreadpin", None):
        return
    template = cputune.iothreadpin[0]
    pins = []
    for thread in range(1, count + 1):
        pin = type(template)()
        pin.iothread = thread
        pin.cpuset = template.cpuset
        pins.append(pin)
    cputune.iothreadpin = pins
