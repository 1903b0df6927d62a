"""``<address>`` of a guest device: PCI slots and drive (controller/bus/unit) positions."""

from __future__ import annotations

from typing import Any

from lxml import etree

from nova_disk_tuning.domxml import base


class LibvirtConfigGuestDeviceAddress(base.LibvirtConfigObject):
    """``<address type=...>``; use the PCI or drive subclass."""

    root_name = "address"
    type = ""
    fields: tuple[str, ...] = ()

    def format_dom(self) -> etree._Element:
        element = super().format_dom()
        element.set("type", self.type)
        for name in self.fields:
            element.set(name, self._format_field(name, getattr(self, name)))
        return element

    def _format_field(self, name: str, value: int) -> str:
        return str(value)

    def parse_dom(self, xmldoc: etree._Element) -> None:
        super().parse_dom(xmldoc)
        for name in self.fields:
            value = base.parse_int(xmldoc, name, "address", name)
            setattr(self, name, 0 if value is None else value)


class LibvirtConfigGuestDeviceAddressPCI(LibvirtConfigGuestDeviceAddress):
    # The attributes ``checks`` declares, for type checkers.
    domain: int | None
    bus: int | None
    slot: int | None
    function: int | None
    type = "pci"
    fields = ("domain", "bus", "slot", "function")
    checks = {
        "domain": base.int_range("address", 0, 0xFFFF),
        "bus": base.int_range("address", 0, 0xFF),
        "slot": base.int_range("address", 0, 0x1F),
        "function": base.int_range("address", 0, 7),
    }
    defaults = {"domain": 0, "bus": 0, "slot": 0, "function": 0}

    def _format_field(self, name: str, value: int) -> str:
        # The widths libvirt itself writes, so our XML diffs cleanly with its.
        width = {"domain": 4, "bus": 2, "slot": 2, "function": 1}[name]
        return f"0x{value:0{width}x}"


class LibvirtConfigGuestDeviceAddressDrive(LibvirtConfigGuestDeviceAddress):
    # The attributes ``checks`` declares, for type checkers.
    controller: int | None
    bus: int | None
    target: int | None
    unit: int | None
    type = "drive"
    fields = ("controller", "bus", "target", "unit")
    checks = {name: base.int_range("address", 0, 0xFFFF) for name in fields}
    defaults = dict.fromkeys(fields, 0)


_ADDRESS_TYPES: dict[str, type[LibvirtConfigGuestDeviceAddress]] = {
    "pci": LibvirtConfigGuestDeviceAddressPCI,
    "drive": LibvirtConfigGuestDeviceAddressDrive,
}


def parse_device_address(xmldoc: etree._Element) -> LibvirtConfigGuestDeviceAddress:
    """Build the address object matching ``<address type=...>``."""
    kind = xmldoc.get("type")
    cls = _ADDRESS_TYPES.get(kind or "")
    if cls is None:
        raise base.invalid("type", "address", kind, ", ".join(map(repr, _ADDRESS_TYPES)))
    address = cls()
    address.parse_dom(xmldoc)
    return address


def address_check(path: str) -> base.Instance:
    return base.Instance(path, LibvirtConfigGuestDeviceAddress)


def parse_address(obj: Any, xmldoc: etree._Element) -> None:
    found = xmldoc.find("address")
    # Address types not modelled here (usb, isa, ...) are left out like
    # unknown elements; the ones this module renders always come back.
    if found is None or found.get("type") not in _ADDRESS_TYPES:
        obj.device_addr = None
    else:
        obj.device_addr = parse_device_address(found)
