"""Nova's config objects, taught the ``<driver>`` attributes Nova cannot render.

Nova 34's ``LibvirtConfigGuestDisk.format_dom`` writes name, type, cache,
discard and io (and io only when one of the others is set), nothing else;
its virtio-scsi controller has no ``<driver>`` at all. The policy sets the
rest on the same objects under the project's attribute names
(``driver_iothread``, ``driver_queues``, ...); the subclasses here render
them after Nova's own rendering, through the one table of ``<driver>``
attribute names (:data:`~nova_disk_tuning.domxml.disk_values.DRIVER_ATTRS`).
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from nova.virt.libvirt import config as vconfig

from nova_disk_tuning.domxml.disk_values import DRIVER_ATTRS
from nova_disk_tuning.policy.result import DiskTuning

# The config attributes the policy decides (driver_cache, driver_io, ...).
_DECIDED = tuple(DiskTuning.ATTRIBUTES.values())


class TunedDisk(vconfig.LibvirtConfigGuestDisk):
    """A Nova disk config that renders every ``<driver>`` attribute it carries."""

    def format_dom(self) -> Any:
        dev = super().format_dom()
        driver = dev.find("driver")
        values = {xml: getattr(self, py, None) for py, xml in DRIVER_ATTRS.items()}
        queues = getattr(self, "driver_iothread_queues", None) or {}
        missing = {k: v for k, v in values.items() if v is not None and _unset(driver, k)}
        if not missing and not queues:
            return dev
        if driver is None:
            # Nova drops <driver> when only io is set (its bug); emit it.
            driver = etree.SubElement(dev, "driver")
        for name, value in missing.items():
            driver.set(name, str(value))
        if queues:
            threads = etree.SubElement(driver, "iothreads")
            for thread_id, ids in queues.items():
                thread = etree.SubElement(threads, "iothread", id=str(thread_id))
                for queue in ids:
                    etree.SubElement(thread, "queue", id=str(queue))
        return dev


class TunedController(vconfig.LibvirtConfigGuestController):
    """A virtio-scsi controller config with ``<driver iothread= queues=>``."""

    def format_dom(self) -> Any:
        controller = super().format_dom()
        values = {
            "iothread": getattr(self, "driver_iothread", None),
            "queues": getattr(self, "driver_queues", None),
        }
        if any(v is not None for v in values.values()):
            driver = etree.SubElement(controller, "driver")
            for name, value in values.items():
                if value is not None:
                    driver.set(name, str(value))
        return controller


def _unset(driver: Any, name: str) -> bool:
    """True when ``name`` is not yet set on ``driver`` (or there is no driver)."""
    return driver is None or driver.get(name) is None


def adopt(device: Any) -> Any:
    """The same config object, rendered by the matching subclass above.

    Nova builds a fresh config object for every guest config, so changing
    its class in place affects nothing else; every attribute Nova set stays.
    """
    if type(device) is vconfig.LibvirtConfigGuestDisk:
        device.__class__ = TunedDisk
    elif type(device) is vconfig.LibvirtConfigGuestController:
        device.__class__ = TunedController
    return device


def carry_driver(device: Any, running: Any) -> Any:
    """``device`` (adopted) with every ``<driver>`` value the policy decides taken from ``running``.

    ``running`` is a disk parsed from a domain's XML. A value it lacks is set to
    None, so ``device`` renders the same ``<driver>`` the disk has now.
    """
    device = adopt(device)
    for attribute in _DECIDED:
        setattr(device, attribute, getattr(running, attribute, None) or None)
    return device


def driver_summary(device: Any) -> str:
    """``cache=none io=native iothread=2``: the ``<driver>`` values the policy decides."""
    values = ((a.removeprefix("driver_"), getattr(device, a, None)) for a in _DECIDED)
    return " ".join(f"{name}={value}" for name, value in values if value) or "(none)"


def repin_iothreads(xml: str) -> str:
    """``xml`` with every ``<iothreadpin>`` on the CPUs of ``<emulatorpin>``.

    The drop-in pins each IOThread where Nova pins its one: on the emulator's
    CPUs (:func:`nova_disk_tuning.nova.tune` at build time). A live migration
    moves the emulator pin and Nova's IOThread 1 to the destination's CPUs,
    and leaves IOThreads 2..N on the source's; this moves them too.
    """
    root = etree.fromstring(xml.encode())
    emulator = root.find("cputune/emulatorpin")
    cpuset = emulator.get("cpuset") if emulator is not None else None
    pins = root.findall("cputune/iothreadpin")
    if cpuset is None or not pins:
        return xml
    for pin in pins:
        pin.set("cpuset", cpuset)
    return str(etree.tostring(root, encoding="unicode"))
