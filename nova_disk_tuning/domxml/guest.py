"""``<domain>``: the guest config object (Nova-compatible names, no policy).

``LibvirtConfigGuest`` and the device classes translate between Python
objects and libvirt domain XML.  They render exactly what they are given and
``parse_dom`` reads back everything ``format_dom`` writes.  Values are
checked when they are assigned (and again when rendered), so a value libvirt
would reject fails here, with a message that names the attribute, the element
and the allowed values.

``LibvirtConfigGuest`` is the ``<domain>``; the package's ``__init__``
names every public class and constant.
"""

from __future__ import annotations

import re
from collections import Counter

from lxml import etree

from nova_disk_tuning import exception
from nova_disk_tuning.domxml import base
from nova_disk_tuning.domxml.base import LibvirtConfigObject
from nova_disk_tuning.domxml.devices import (
    DEVICE_CLASSES,
    LibvirtConfigGuestController,
)
from nova_disk_tuning.domxml.disk import LibvirtConfigGuestDisk

_LIFECYCLE = ("destroy", "restart", "preserve", "rename-restart")
# <memory unit=...> as libvirt accepts it, in bytes.
_MEMORY_UNITS = {
    "b": 1, "bytes": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
}  # fmt: skip


# libvirt's own bound on a CPU number in a cpuset (VIR_DOMAIN_CPUMASK_LEN).
_MAX_CPU = 16383


_CPUSET_PART = re.compile(r"(\^?)(\d+)(?:-(\d+))?", re.ASCII)


def _host_cpu(tag: str) -> base.Check:
    return base.int_range(f"domain/cputune/{tag}", 0, _MAX_CPU)


def format_cpuset(cpus: list[int]) -> str:
    """libvirt's cpuset syntax for a list of host CPUs: ``0,2-3``."""
    ordered = sorted(set(cpus))
    spans: list[list[int]] = []
    for cpu in ordered:
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def parse_cpuset(text: str | None, path: str, name: str) -> list[int]:
    """The host CPUs of a libvirt cpuset (``0-3,^2,5``), in order; refused as libvirt would."""
    chosen: set[int] = set()
    for part in (text or "").split(","):
        found = _CPUSET_PART.fullmatch(part.strip())
        low, high = (int(found[2]), int(found[3] or found[2])) if found else (1, 0)
        if found is None or low > high or high > _MAX_CPU:
            raise base.invalid(name, path, text, f"a cpuset like '0-3,^2,5' of CPUs 0..{_MAX_CPU}")
        span = set(range(low, high + 1))
        chosen = chosen - span if found[1] else chosen | span
    if not chosen:
        raise base.invalid(name, path, text, "a cpuset that leaves at least one CPU")
    return sorted(chosen)


class LibvirtConfigGuest(LibvirtConfigObject):
    """``<domain>``: what a bootable KVM/QEMU guest needs, plus its devices."""

    # The attributes ``checks`` declares, for type checkers.
    virt_type: str
    name: str | None
    uuid: str | None
    memory: int | None
    vcpus: int | None
    iothreads: int | None
    iothread_ids: list[int]
    # <cputune>: host CPUs per vCPU, per IOThread id, and for QEMU's main loop.
    vcpu_pins: dict[int, list[int]]
    iothread_pins: dict[int, list[int]]
    emulator_pin: list[int]
    os_type: str
    os_arch: str | None
    os_mach_type: str | None
    os_boot_dev: list[str]
    os_kernel: str | None
    os_initrd: str | None
    os_cmdline: str | None
    features: list[str]
    clock_offset: str | None
    on_poweroff: str | None
    on_reboot: str | None
    on_crash: str | None
    emulator: str | None
    devices: list[LibvirtConfigObject]

    root_name = "domain"
    checks = {
        "virt_type": base.enum("domain", "qemu", "kvm", "test", required=True),
        "name": base.text("domain/name"),
        "uuid": base.uuid_text("domain/uuid"),
        "memory": base.positive_int("domain/memory"),
        "vcpus": base.positive_int("domain/vcpu"),
        "iothreads": base.positive_int("domain/iothreads"),
        "iothread_ids": base.ListOf(base.positive_int("domain/iothreadids/iothread")),
        "vcpu_pins": base.DictOfLists(
            base.int_range("domain/cputune/vcpupin", 0, _MAX_CPU), _host_cpu("vcpupin")
        ),
        "iothread_pins": base.DictOfLists(
            base.positive_int("domain/cputune/iothreadpin"), _host_cpu("iothreadpin")
        ),
        "emulator_pin": base.ListOf(_host_cpu("emulatorpin")),
        "os_type": base.enum("domain/os/type", "hvm", required=True),
        "os_arch": base.pattern("domain/os/type", r"[a-z0-9_]+", "architectures like 'x86_64'"),
        "os_mach_type": base.text("domain/os/type"),
        "os_boot_dev": base.ListOf(base.enum("domain/os/boot", "hd", "cdrom", "network", "fd")),
        "os_kernel": base.text("domain/os/kernel"),
        "os_initrd": base.text("domain/os/initrd"),
        "os_cmdline": base.text("domain/os/cmdline"),
        "features": base.ListOf(base.enum("domain/features", "acpi", "apic", "pae")),
        "clock_offset": base.enum("domain/clock", "utc", "localtime"),
        "on_poweroff": base.enum("domain/on_poweroff", *_LIFECYCLE),
        "on_reboot": base.enum("domain/on_reboot", *_LIFECYCLE),
        "on_crash": base.enum(
            "domain/on_crash", *_LIFECYCLE, "coredump-destroy", "coredump-restart"
        ),
        "emulator": base.text("domain/devices/emulator"),
        "devices": base.ListOf(base.Instance("domain/devices", *DEVICE_CLASSES.values())),
    }
    defaults = {"virt_type": "kvm", "os_type": "hvm", "memory": 512 * 1024, "vcpus": 1}

    def add_device(self, device: LibvirtConfigObject) -> None:
        self.devices = [*self.devices, device]

    # Validation of combinations ----------------------------------------------

    def validate(self) -> None:
        super().validate()
        if self.name is None:
            raise base.invalid("name", "domain/name", None, "a non-empty string")
        if self.memory is None or self.vcpus is None:
            raise base.invalid("memory/vcpus", "domain", None, "positive integers")
        self._validate_iothreads()
        self._validate_pins()
        disks = [d for d in self.devices if isinstance(d, LibvirtConfigGuestDisk)]
        # Every disk has a target_dev: super().validate() validated each disk.
        targets = Counter(d.target_dev for d in disks if d.target_dev is not None)
        duplicated = sorted(t for t, n in targets.items() if n > 1)
        if duplicated:
            raise exception.InvalidDiskConfig(
                disk=", ".join(duplicated),
                reason=f"target used by more than one disk of domain {self.name!r}; "
                "give each disk its own target_dev",
            )
        # Disks are the only devices with an alias.
        aliases = Counter(d.alias for d in disks if d.alias is not None)
        duplicated = sorted(a for a, n in aliases.items() if n > 1)
        if duplicated:
            raise base.invalid(
                "alias", "domain/devices/disk/alias", duplicated[0],
                "names unique within the domain",
            )  # fmt: skip
        if self.os_boot_dev and any(getattr(d, "boot_order", None) for d in self.devices):
            raise base.invalid(
                "os_boot_dev", "domain/os/boot", self.os_boot_dev,
                "[] while a device has boot_order (libvirt allows one or the other)",
            )  # fmt: skip

    def iothread_id_set(self) -> set[int]:
        """The ids of the domain's IOThreads: <iothreadids>, then libvirt's own for the rest.

        libvirt gives the IOThreads ``<iothreadids>`` does not name the lowest
        ids not taken, up to ``<iothreads>``.
        """
        known = set(self.iothread_ids)
        candidate = 1
        while len(known) < (self.iothreads or 0):
            if candidate not in known:
                known.add(candidate)
            candidate += 1
        return known

    def _validate_iothreads(self) -> None:
        ids = self.iothread_ids
        if len(set(ids)) != len(ids):
            raise base.invalid(
                "iothread_ids", "domain/iothreadids", ids, "distinct positive integers"
            )
        if self.iothreads is not None and len(ids) > self.iothreads:
            raise base.invalid(
                "iothreads", "domain/iothreads", self.iothreads,
                f"at least len(iothread_ids) = {len(ids)}",
            )  # fmt: skip
        known = self.iothread_id_set()
        for device in self.devices:
            missing = sorted(_iothread_refs(device) - known)
            if missing:
                raise base.invalid(
                    "driver_iothread", f"{device.root_name}/driver", missing[0],
                    f"IOThread ids defined by the domain: {sorted(known) or 'none'}",
                )  # fmt: skip

    def _validate_pins(self) -> None:
        assert self.vcpus is not None  # validate() checked it first
        for vcpu, cpus in self.vcpu_pins.items():
            if vcpu >= self.vcpus or not cpus:
                raise base.invalid(
                    "vcpu_pins", "domain/cputune/vcpupin", {vcpu: cpus},
                    f"vCPU numbers below vcpus = {self.vcpus}, each with a host CPU",
                )  # fmt: skip
        known = self.iothread_id_set()
        for thread, cpus in self.iothread_pins.items():
            if thread not in known or not cpus:
                raise base.invalid(
                    "iothread_pins", "domain/cputune/iothreadpin", {thread: cpus},
                    f"IOThread ids defined by the domain ({sorted(known) or 'none'}), "
                    "each with a host CPU",
                )  # fmt: skip

    # XML ------------------------------------------------------------------------

    def format_dom(self) -> etree._Element:
        root = super().format_dom()
        root.set("type", self.virt_type)
        etree.SubElement(root, "name").text = self.name
        if self.uuid is not None:
            etree.SubElement(root, "uuid").text = self.uuid
        etree.SubElement(root, "memory", unit="KiB").text = str(self.memory)
        etree.SubElement(root, "vcpu").text = str(self.vcpus)
        if self.iothreads is not None:
            etree.SubElement(root, "iothreads").text = str(self.iothreads)
        if self.iothread_ids:
            ids = etree.SubElement(root, "iothreadids")
            for thread_id in self.iothread_ids:
                etree.SubElement(ids, "iothread", id=str(thread_id))
        self._format_cputune(root)
        self._format_os(root)
        if self.features:
            features = etree.SubElement(root, "features")
            for feature in self.features:
                etree.SubElement(features, feature)
        if self.clock_offset is not None:
            etree.SubElement(root, "clock", offset=self.clock_offset)
        for event in ("on_poweroff", "on_reboot", "on_crash"):
            if getattr(self, event) is not None:
                etree.SubElement(root, event).text = getattr(self, event)
        devices = etree.SubElement(root, "devices")
        if self.emulator is not None:
            etree.SubElement(devices, "emulator").text = self.emulator
        for device in self.devices:
            devices.append(device.format_dom())
        return root

    def _format_cputune(self, root: etree._Element) -> None:
        if not (self.vcpu_pins or self.iothread_pins or self.emulator_pin):
            return
        tune = etree.SubElement(root, "cputune")
        for vcpu, cpus in self.vcpu_pins.items():
            etree.SubElement(tune, "vcpupin", vcpu=str(vcpu), cpuset=format_cpuset(cpus))
        if self.emulator_pin:
            etree.SubElement(tune, "emulatorpin", cpuset=format_cpuset(self.emulator_pin))
        for thread, cpus in self.iothread_pins.items():
            etree.SubElement(tune, "iothreadpin", iothread=str(thread), cpuset=format_cpuset(cpus))

    def _parse_cputune(self, tune: etree._Element) -> None:
        # <vcpupin vcpu=N> and <iothreadpin iothread=N>: the same shape, two attributes.
        pins: dict[str, dict[int, list[int]]] = {"vcpu_pins": {}, "iothread_pins": {}}
        keyed = {"vcpupin": ("vcpu", "vcpu_pins"), "iothreadpin": ("iothread", "iothread_pins")}
        for child in tune:
            path = f"domain/cputune/{child.tag}"
            if child.tag in keyed:
                attr, name = keyed[child.tag]
                key = base.required(
                    base.parse_int(child, attr, path, name), name, self.checks[name].key
                )
                _refuse_twice(key, pins[name], path, name)
                pins[name][key] = parse_cpuset(child.get("cpuset"), path, name)
            elif child.tag == "emulatorpin":
                self.emulator_pin = parse_cpuset(child.get("cpuset"), path, "emulator_pin")
        self.vcpu_pins, self.iothread_pins = pins["vcpu_pins"], pins["iothread_pins"]

    def _format_os(self, root: etree._Element) -> None:
        os_element = etree.SubElement(root, "os")
        os_type = etree.SubElement(os_element, "type")
        base.set_attrs(os_type, arch=self.os_arch, machine=self.os_mach_type)
        os_type.text = self.os_type
        for tag in ("kernel", "initrd", "cmdline"):
            value = getattr(self, f"os_{tag}")
            if value is not None:
                etree.SubElement(os_element, tag).text = value
        for dev in self.os_boot_dev:
            etree.SubElement(os_element, "boot", dev=dev)

    def parse_dom(self, xmldoc: etree._Element) -> None:
        super().parse_dom(xmldoc)
        self.virt_type = base.required(xmldoc.get("type"), "virt_type", self.checks["virt_type"])
        devices = []
        for child in xmldoc:
            tag = child.tag
            if tag in ("name", "uuid"):
                setattr(self, tag, child.text)
            elif tag == "memory":
                self.memory = self._parse_memory(child)
            elif tag == "vcpu":
                self.vcpus = base.parse_text_int(child, "domain/vcpu", "vcpus")
            elif tag == "iothreads":
                self.iothreads = base.parse_text_int(child, "domain/iothreads", "iothreads")
            elif tag == "iothreadids":
                path = "domain/iothreadids/iothread"
                id_check = self.checks["iothread_ids"].item
                self.iothread_ids = [
                    base.required(
                        base.parse_int(t, "id", path, "iothread_ids"), "iothread_ids", id_check
                    )
                    for t in child.iter("iothread")
                ]
            elif tag == "cputune":
                self._parse_cputune(child)
            elif tag == "os":
                self._parse_os(child)
            elif tag == "features":
                known = self.checks["features"].item
                self.features = [f.tag for f in child if known.accepts(f.tag)]
            elif tag == "clock":
                self.clock_offset = child.get("offset")
            elif tag in ("on_poweroff", "on_reboot", "on_crash"):
                setattr(self, tag, child.text)
            elif tag == "devices":
                for element in child:
                    if element.tag == "emulator":
                        self.emulator = element.text
                    elif element.tag in DEVICE_CLASSES and (
                        DEVICE_CLASSES[element.tag].models(element)
                    ):
                        device = DEVICE_CLASSES[element.tag]()
                        device.parse_dom(element)
                        devices.append(device)
        self.devices = devices

    def _parse_os(self, os_element: etree._Element) -> None:
        boot_devs = []
        boot_check = self.checks["os_boot_dev"].item
        for child in os_element:
            if child.tag == "type":
                self.os_type = base.required(child.text, "os_type", self.checks["os_type"])
                self.os_arch = child.get("arch")
                self.os_mach_type = child.get("machine")
            elif child.tag in ("kernel", "initrd", "cmdline"):
                setattr(self, f"os_{child.tag}", child.text)
            elif child.tag == "boot":
                boot_devs.append(base.required(child.get("dev"), "os_boot_dev", boot_check))
        self.os_boot_dev = boot_devs

    @staticmethod
    def _parse_memory(element: etree._Element) -> int | None:
        value = base.parse_text_int(element, "domain/memory", "memory")
        unit = element.get("unit", "KiB").lower()
        if unit not in _MEMORY_UNITS:
            raise base.invalid("memory", "domain/memory", unit, ", ".join(_MEMORY_UNITS))
        if value is None:
            return None
        return value * _MEMORY_UNITS[unit] // 1024


def _refuse_twice(key: int, seen: dict[int, list[int]], path: str, name: str) -> None:
    if key in seen:
        raise base.invalid(name, path, key, "one pin per vCPU or IOThread (libvirt refuses two)")


def _iothread_refs(device: LibvirtConfigObject) -> set[int]:
    """The IOThread ids a disk or controller is bound to."""
    refs: set[int] = set()
    bindable = (LibvirtConfigGuestDisk, LibvirtConfigGuestController)
    if isinstance(device, bindable) and device.driver_iothread is not None:
        refs.add(device.driver_iothread)
    if isinstance(device, LibvirtConfigGuestDisk):
        refs.update(device.driver_iothread_queues)
    return refs
