"""Guest devices other than disks: controllers, consoles, the memory balloon.

``DEVICE_CLASSES`` maps each ``<devices>`` child this package understands
(disks included) to its class, for parsing.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from nova_disk_tuning.domxml import base
from nova_disk_tuning.domxml.address import (
    LibvirtConfigGuestDeviceAddress,
    address_check,
    parse_address,
)
from nova_disk_tuning.domxml.disk import LibvirtConfigGuestDisk

SCSI_CONTROLLER_MODELS = (
    "virtio-scsi", "virtio-transitional", "virtio-non-transitional",
    "lsilogic", "lsisas1068", "lsisas1078", "ibmvscsi", "vmpvscsi",
)  # fmt: skip

# Controllers, character devices, balloon ---------------------------------------


class LibvirtConfigGuestController(base.LibvirtConfigObject):
    """``<controller>``; a virtio-scsi controller can own an IOThread and queues."""

    # The attributes ``checks`` declares, for type checkers.
    type: str | None
    model: str | None
    index: int | None
    driver_iothread: int | None
    driver_queues: int | None
    device_addr: LibvirtConfigGuestDeviceAddress | None

    root_name = "controller"
    checks = {
        "type": base.enum(
            "controller", "scsi", "ide", "sata", "usb", "pci", "virtio-serial", "fdc"
        ),
        "model": base.text("controller"),
        "index": base.int_range("controller", 0, 255),
        "driver_iothread": base.positive_int("controller/driver"),
        "driver_queues": base.positive_int("controller/driver"),
        "device_addr": address_check("controller/address"),
    }
    defaults = {"index": 0}
    kind_attributes = {"type": "type"}

    def validate(self) -> None:
        super().validate()
        if self.type is None:
            raise base.invalid("type", "controller", None, self.checks["type"].allowed)
        if self.type == "scsi" and self.model is not None:
            base.enum("controller", *SCSI_CONTROLLER_MODELS)("model", self.model)
        if self.driver_iothread is not None and self.model != "virtio-scsi":
            raise base.invalid(
                "driver_iothread", "controller/driver", self.driver_iothread,
                "None unless type='scsi' model='virtio-scsi'",
            )  # fmt: skip

    def format_dom(self) -> etree._Element:
        element = super().format_dom()
        base.set_attrs(element, type=self.type, index=self.index, model=self.model)
        if self.driver_queues is not None or self.driver_iothread is not None:
            base.set_attrs(
                etree.SubElement(element, "driver"),
                queues=self.driver_queues,
                iothread=self.driver_iothread,
            )
        if self.device_addr is not None:
            element.append(self.device_addr.format_dom())
        return element

    def parse_dom(self, xmldoc: etree._Element) -> None:
        super().parse_dom(xmldoc)
        self.type = xmldoc.get("type")
        self.model = xmldoc.get("model")
        self.index = base.parse_int(xmldoc, "index", "controller", "index")
        driver = xmldoc.find("driver")
        if driver is not None:
            path = "controller/driver"
            self.driver_queues = base.parse_int(driver, "queues", path, "driver_queues")
            self.driver_iothread = base.parse_int(driver, "iothread", path, "driver_iothread")
        parse_address(self, xmldoc)


class LibvirtConfigGuestCharBase(base.LibvirtConfigObject):
    """A character device backed by a file (a console log) or a pty."""

    target_types: tuple[str, ...] = ()
    kind_attributes = {"type": "type"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls.checks = {
            "type": base.enum(cls.root_name, "file", "pty"),
            "source_path": base.text(f"{cls.root_name}/source"),
            "target_type": base.enum(f"{cls.root_name}/target", *cls.target_types),
            "target_port": base.int_range(f"{cls.root_name}/target", 0, 31),
        }
        super().__init_subclass__(**kwargs)

    def validate(self) -> None:
        super().validate()
        if self.type is None:
            raise base.invalid("type", self.root_name, None, "'file', 'pty'")
        if self.type == "file" and self.source_path is None:
            raise base.invalid(
                "source_path", f"{self.root_name}/source", None,
                "an absolute file path when type='file'",
            )  # fmt: skip

    def format_dom(self) -> etree._Element:
        element = super().format_dom()
        # validate() (in super().format_dom()) refused a None type.
        base.set_attrs(element, type=self.type)
        if self.source_path is not None:
            etree.SubElement(element, "source", path=self.source_path)
        if self.target_type is not None or self.target_port is not None:
            base.set_attrs(
                etree.SubElement(element, "target"), type=self.target_type, port=self.target_port
            )
        return element

    def parse_dom(self, xmldoc: etree._Element) -> None:
        super().parse_dom(xmldoc)
        self.type = xmldoc.get("type")
        source = xmldoc.find("source")
        self.source_path = None if source is None else source.get("path")
        target = xmldoc.find("target")
        if target is not None:
            self.target_type = target.get("type")
            path = f"{self.root_name}/target"
            self.target_port = base.parse_int(target, "port", path, "target_port")


class LibvirtConfigGuestSerial(LibvirtConfigGuestCharBase):
    # The attributes ``checks`` declares, for type checkers.
    type: str | None
    source_path: str | None
    target_type: str | None
    target_port: int | None
    root_name = "serial"
    target_types = ("isa-serial", "pci-serial", "usb-serial")


class LibvirtConfigGuestConsole(LibvirtConfigGuestCharBase):
    # The attributes ``checks`` declares, for type checkers.
    type: str | None
    source_path: str | None
    target_type: str | None
    target_port: int | None
    root_name = "console"
    target_types = ("serial", "virtio")


class LibvirtConfigMemoryBalloon(base.LibvirtConfigObject):
    """``<memballoon>``; model 'none' turns the device off."""

    # The attributes ``checks`` declares, for type checkers.
    model: str

    root_name = "memballoon"
    checks = {"model": base.enum("memballoon", "virtio", "none", required=True)}
    defaults = {"model": "none"}
    kind_attributes = {"model": "model"}

    def format_dom(self) -> etree._Element:
        element = super().format_dom()
        element.set("model", self.model)
        return element

    def parse_dom(self, xmldoc: etree._Element) -> None:
        super().parse_dom(xmldoc)
        self.model = base.required(xmldoc.get("model"), "model", self.checks["model"])


DEVICE_CLASSES: dict[str, type[base.LibvirtConfigObject]] = {
    cls.root_name: cls
    for cls in (
        LibvirtConfigGuestDisk,
        LibvirtConfigGuestController,
        LibvirtConfigGuestSerial,
        LibvirtConfigGuestConsole,
        LibvirtConfigMemoryBalloon,
    )
}
