"""``<disk>``: the config object of a guest disk, with Nova's attribute names.

Attribute names follow Nova's ``nova.virt.libvirt.config`` where Nova has
the attribute, so code written against Nova's objects reads the same; the
rest of ``<driver>`` (iothread, queues, detect_zeroes, discard_no_unref) is
here too. It renders exactly what it is given: deciding cache, io, discard
or IOThreads is the tuning policy's job.
"""

from __future__ import annotations

from lxml import etree

from nova_disk_tuning import exception
from nova_disk_tuning.domxml import base
from nova_disk_tuning.domxml import disk_values as allowed
from nova_disk_tuning.domxml.address import (
    LibvirtConfigGuestDeviceAddress,
    address_check,
    parse_address,
)

# Disks ------------------------------------------------------------------------


class LibvirtConfigGuestDisk(base.LibvirtConfigObject):
    """``<disk>``: file, block or network storage as a disk, cdrom, lun or floppy."""

    # The attributes ``checks`` declares, for type checkers.
    source_type: str
    source_device: str
    source_path: str | None
    source_protocol: str | None
    source_name: str | None
    source_hosts: list[str]
    # One port per host, None for the protocol's default; [] for no ports.
    source_ports: list[int | None]
    driver_name: str | None
    driver_format: str | None
    driver_cache: str | None
    driver_error_policy: str | None
    driver_rerror_policy: str | None
    driver_io: str | None
    driver_copy_on_read: str | None
    driver_discard: str | None
    driver_iothread: int | None
    driver_detect_zeroes: str | None
    driver_queues: int | None
    driver_queue_size: int | None
    driver_discard_no_unref: str | None
    # Never None: assigning None stores {}.
    driver_iothread_queues: dict[int, list[int]]
    target_dev: str | None
    target_bus: str | None
    serial: str | None
    boot_order: int | None
    alias: str | None
    readonly: bool
    shareable: bool
    auth_username: str | None
    auth_secret_type: str | None
    auth_secret_uuid: str | None
    disk_total_bytes_sec: int | None
    disk_read_bytes_sec: int | None
    disk_write_bytes_sec: int | None
    disk_total_iops_sec: int | None
    disk_read_iops_sec: int | None
    disk_write_iops_sec: int | None
    disk_total_bytes_sec_max: int | None
    disk_read_bytes_sec_max: int | None
    disk_write_bytes_sec_max: int | None
    disk_total_iops_sec_max: int | None
    disk_read_iops_sec_max: int | None
    disk_write_iops_sec_max: int | None
    disk_size_iops_sec: int | None
    disk_total_bytes_sec_max_length: int | None
    disk_read_bytes_sec_max_length: int | None
    disk_write_bytes_sec_max_length: int | None
    disk_total_iops_sec_max_length: int | None
    disk_read_iops_sec_max_length: int | None
    disk_write_iops_sec_max_length: int | None
    logical_block_size: int | None
    physical_block_size: int | None
    device_addr: LibvirtConfigGuestDeviceAddress | None

    root_name = "disk"
    checks = {
        "source_type": base.enum("disk", *allowed.DISK_SOURCE_TYPES, required=True),
        "source_device": base.enum("disk", *allowed.DISK_DEVICES, required=True),
        "source_path": base.text("disk/source"),
        "source_protocol": base.enum("disk/source", *allowed.NETWORK_PROTOCOLS),
        "source_name": base.text("disk/source"),
        "source_hosts": base.ListOf(
            base.pattern("disk/source/host", r"[a-zA-Z0-9.:-]+", "host names or IP addresses")
        ),
        "source_ports": allowed.PortList(base.int_range("disk/source/host", 1, 65535), True),
        "driver_name": base.enum("disk/driver", "qemu"),
        "driver_format": base.enum("disk/driver", *allowed.DISK_FORMATS),
        "driver_cache": base.enum("disk/driver", *allowed.DISK_CACHE_MODES),
        "driver_error_policy": base.enum("disk/driver", *allowed.DISK_ERROR_POLICIES),
        "driver_rerror_policy": base.enum("disk/driver", *allowed.DISK_RERROR_POLICIES),
        "driver_io": base.enum("disk/driver", *allowed.DISK_IO_MODES),
        "driver_copy_on_read": base.on_off("disk/driver"),
        "driver_discard": base.enum("disk/driver", *allowed.DISK_DISCARD_MODES),
        "driver_iothread": base.positive_int("disk/driver"),
        "driver_detect_zeroes": base.enum("disk/driver", *allowed.DISK_DETECT_ZEROES),
        "driver_queues": base.positive_int("disk/driver"),
        "driver_queue_size": base.positive_int("disk/driver"),
        "driver_discard_no_unref": base.on_off("disk/driver"),
        # {iothread id: [virtqueue ids]}: per-queue mapping (common.versions QUEUE_MAPPING_*).
        "driver_iothread_queues": base.DictOfLists(
            base.positive_int("disk/driver/iothreads/iothread"),
            base.int_range("disk/driver/iothreads/iothread/queue", 0, 1023),
        ),
        "target_dev": base.pattern("disk/target", r"[a-zA-Z0-9_]+", "device names like 'vda'"),
        "target_bus": base.enum("disk/target", *allowed.DISK_BUSES),
        # The characters libvirt's schema and QEMU accept in a disk serial.
        "serial": base.pattern("disk/serial", r"[A-Za-z0-9_.+\- ]+", "strings of [A-Za-z0-9_.+- ]"),
        "boot_order": base.positive_int_or_decimal("disk/boot"),
        "alias": base.pattern("disk/alias", r"[a-zA-Z0-9_.-]+", "names of [a-zA-Z0-9_.-]"),
        "readonly": base.Flag("disk/readonly"),
        "shareable": base.Flag("disk/shareable"),
        "auth_username": base.pattern("disk/auth", r"[a-zA-Z0-9_+-]+", "names of [a-zA-Z0-9_+-]"),
        "auth_secret_type": base.enum("disk/auth/secret", "ceph", "iscsi"),
        "auth_secret_uuid": base.uuid_text("disk/auth/secret"),
        **{f"disk_{tag}": base.positive_int("disk/iotune") for tag in allowed.IOTUNE_ELEMENTS},
        "logical_block_size": base.enum_int("disk/blockio", 512, 1024, 2048, 4096),
        "physical_block_size": base.enum_int("disk/blockio", 512, 1024, 2048, 4096),
        "device_addr": address_check("disk/address"),
    }
    defaults = {"source_type": "file", "source_device": "disk"}
    kind_attributes = {"type": "source_type", "device": "source_device"}

    # Validation of combinations ------------------------------------------

    def _name(self) -> str:
        return str(self.target_dev or self.source_path or self.source_name or "<disk>")

    def _bad(self, reason: str) -> exception.InvalidDiskConfig:
        return exception.InvalidDiskConfig(disk=self._name(), reason=reason)

    def validate(self) -> None:
        super().validate()
        if self.target_dev is None:
            raise self._bad("target_dev is not set; every disk needs a target such as 'vda'")
        self._validate_source()
        self._validate_driver()
        self._validate_iotune()
        self._validate_address()

    def _validate_source(self) -> None:
        if self.source_type == "network":
            if self.source_protocol is None or (
                self.source_name is None and self.source_protocol != "nbd"
            ):
                raise self._bad(
                    "a network disk needs source_protocol and source_name (e.g. 'rbd' and "
                    "'pool/volume')"
                )
            low, high = allowed.HOSTS_PER_PROTOCOL.get(self.source_protocol, (1, 1))
            count = len(self.source_hosts)
            if count < low or (high is not None and count > high):
                wanted = f"{low}" if low == high else f"at least {low}"
                raise self._bad(
                    f"protocol {self.source_protocol!r} takes {wanted} source_hosts, got {count}"
                )
            if self.source_ports and len(self.source_ports) != len(self.source_hosts):
                raise self._bad(
                    f"{len(self.source_hosts)} source_hosts but {len(self.source_ports)} "
                    "source_ports; give one port (or None) per host, or no ports"
                )
        elif self.source_protocol or self.source_name or self.source_hosts or self.source_ports:
            raise self._bad(
                f"source_protocol/source_name/source_hosts/source_ports are for network "
                f"disks; this disk has source_type {self.source_type!r}"
            )
        if self.source_device == "lun" and (
            self.source_type == "file" or (self.source_type == "block" and self.source_path is None)
        ):
            raise self._bad(
                "device 'lun' needs source_type 'block' with a source_path, or 'network'"
            )
        if self.source_device == "lun" and self.driver_format not in (None, "raw"):
            raise self._bad(
                f"device 'lun' must use driver_format 'raw', not {self.driver_format!r}"
            )
        if self.auth_username is not None and (
            self.auth_secret_type is None or self.auth_secret_uuid is None
        ):
            raise self._bad("auth_username needs auth_secret_type and auth_secret_uuid")

    def _validate_driver(self) -> None:
        if self.driver_detect_zeroes == "unmap" and self.driver_discard != "unmap":
            raise base.invalid(
                "driver_detect_zeroes",
                "disk/driver",
                "unmap",
                "'off', 'on' ('unmap' only together with driver_discard='unmap')",
            )
        virtio_only = ("driver_iothread", "driver_iothread_queues", "driver_queues",
                       "driver_queue_size")  # fmt: skip
        for name in virtio_only:
            if getattr(self, name) and self.target_bus not in (None, "virtio"):
                raise self._bad(
                    f"{name} works only on bus 'virtio' (bus is {self.target_bus!r}); "
                    "disks on a virtio-scsi controller use the controller's IOThread and queues"
                )
        if self.driver_iothread is not None and self.driver_iothread_queues:
            raise self._bad(
                "driver_iothread and driver_iothread_queues exclude each other; set one of them"
            )

    def _validate_address(self) -> None:
        addr = self.device_addr
        if addr is not None and self.target_bus is not None:
            wanted = "pci" if self.target_bus == "virtio" else "drive"
            if self.target_bus in ("virtio", "scsi", "sata", "ide", "fdc") and addr.type != wanted:
                raise self._bad(
                    f"bus {self.target_bus!r} needs a {wanted} address, got {addr.type!r}"
                )

    def _validate_iotune(self) -> None:
        for suffix in ("", "_max", "_max_length"):
            for kind in ("bytes", "iops"):
                total = f"disk_total_{kind}_sec{suffix}"
                split = [f"disk_{op}_{kind}_sec{suffix}" for op in ("read", "write")]
                if getattr(self, total) is not None and any(getattr(self, s) for s in split):
                    raise self._bad(f"{total} cannot be combined with {' or '.join(split)}")
        for tag in allowed.IOTUNE_BASE:
            if (
                getattr(self, f"disk_{tag}_max_length") is not None
                and getattr(self, f"disk_{tag}_max") is None
            ):
                raise self._bad(f"disk_{tag}_max_length needs disk_{tag}_max")

    # XML ------------------------------------------------------------------

    def format_dom(self) -> etree._Element:
        disk = super().format_dom()
        disk.set("type", self.source_type)
        disk.set("device", self.source_device)
        self._format_driver(disk)
        self._format_source(disk)
        if self.auth_username is not None:
            auth = etree.SubElement(disk, "auth", username=self.auth_username)
            # validate() made sure both are set along with auth_username.
            base.set_attrs(
                etree.SubElement(auth, "secret"),
                type=self.auth_secret_type,
                uuid=self.auth_secret_uuid,
            )
        if self.logical_block_size is not None or self.physical_block_size is not None:
            base.set_attrs(
                etree.SubElement(disk, "blockio"),
                logical_block_size=self.logical_block_size,
                physical_block_size=self.physical_block_size,
            )
        base.set_attrs(etree.SubElement(disk, "target"), dev=self.target_dev, bus=self.target_bus)
        tunes = [(tag, getattr(self, f"disk_{tag}")) for tag in allowed.IOTUNE_ELEMENTS]
        if any(value is not None for _, value in tunes):
            iotune = etree.SubElement(disk, "iotune")
            for tag, value in tunes:
                if value is not None:
                    etree.SubElement(iotune, tag).text = str(value)
        if self.readonly:
            etree.SubElement(disk, "readonly")
        if self.shareable:
            etree.SubElement(disk, "shareable")
        if self.serial is not None:
            etree.SubElement(disk, "serial").text = self.serial
        if self.boot_order is not None:
            etree.SubElement(disk, "boot", order=str(self.boot_order))
        if self.alias is not None:
            etree.SubElement(disk, "alias", name=self.alias)
        if self.device_addr is not None:
            disk.append(self.device_addr.format_dom())
        return disk

    def _format_driver(self, disk: etree._Element) -> None:
        values = {xml: getattr(self, py) for py, xml in allowed.DRIVER_ATTRS.items()}
        # Unlike Nova, any driver attribute (io alone included) yields <driver>.
        if all(v is None for v in values.values()) and not self.driver_iothread_queues:
            return
        driver = etree.SubElement(disk, "driver")
        base.set_attrs(driver, **values)
        if self.driver_iothread_queues:
            iothreads = etree.SubElement(driver, "iothreads")
            for thread_id, queues in self.driver_iothread_queues.items():
                thread = etree.SubElement(iothreads, "iothread", id=str(thread_id))
                for queue in queues:
                    etree.SubElement(thread, "queue", id=str(queue))

    def _format_source(self, disk: etree._Element) -> None:
        if self.source_type == "network":
            source = etree.SubElement(disk, "source")
            base.set_attrs(source, protocol=self.source_protocol, name=self.source_name)
            ports: list[int | None] = self.source_ports or [None] * len(self.source_hosts)
            for host, port in zip(self.source_hosts, ports, strict=True):
                base.set_attrs(etree.SubElement(source, "host"), name=host, port=port)
        elif self.source_path is not None:
            attr = "file" if self.source_type == "file" else "dev"
            etree.SubElement(disk, "source", {attr: self.source_path})

    def parse_dom(self, xmldoc: etree._Element) -> None:
        super().parse_dom(xmldoc)
        self.source_type = xmldoc.get("type", "file")
        self.source_device = xmldoc.get("device", "disk")
        for child in xmldoc:
            if child.tag == "driver":
                self._parse_driver(child)
            elif child.tag == "source":
                self._parse_source(child)
            elif child.tag == "auth":
                self.auth_username = child.get("username")
                secret = child.find("secret")
                if secret is not None:
                    self.auth_secret_type = secret.get("type")
                    self.auth_secret_uuid = secret.get("uuid")
            elif child.tag == "blockio":
                self.logical_block_size = base.parse_int(
                    child, "logical_block_size", "disk/blockio", "logical_block_size"
                )
                self.physical_block_size = base.parse_int(
                    child, "physical_block_size", "disk/blockio", "physical_block_size"
                )
            elif child.tag == "target":
                self.target_dev = child.get("dev")
                self.target_bus = child.get("bus")
            elif child.tag == "iotune":
                for tune in child:
                    if tune.tag in allowed.IOTUNE_ELEMENTS:
                        name = f"disk_{tune.tag}"
                        setattr(self, name, base.parse_text_int(tune, "disk/iotune", name))
            elif child.tag in ("readonly", "shareable"):
                setattr(self, child.tag, True)
            elif child.tag == "serial":
                self.serial = child.text
            elif child.tag == "boot":
                self.boot_order = base.parse_int(child, "order", "disk/boot", "boot_order")
            elif child.tag == "alias":
                self.alias = child.get("name")
        parse_address(self, xmldoc)

    def _parse_driver(self, driver: etree._Element) -> None:
        for py, xml in allowed.DRIVER_ATTRS.items():
            if py in allowed.INT_DRIVER_ATTRS:
                setattr(self, py, base.parse_int(driver, xml, "disk/driver", py))
            else:
                setattr(self, py, driver.get(xml))
        name = "driver_iothread_queues"
        check = self.checks[name]
        mapping: dict[int, list[int]] = {}
        path = "disk/driver/iothreads/iothread"
        for thread in driver.iterfind("iothreads/iothread"):
            thread_id = base.required(base.parse_int(thread, "id", path, name), name, check.key)
            mapping[thread_id] = [
                base.required(base.parse_int(q, "id", f"{path}/queue", name), name, check.item)
                for q in thread.iterfind("queue")
            ]
        self.driver_iothread_queues = mapping

    def _parse_source(self, source: etree._Element) -> None:
        if self.source_type == "network":
            self.source_protocol = source.get("protocol")
            self.source_name = source.get("name")
            hosts = source.findall("host")
            host_check = self.checks["source_hosts"].item
            self.source_hosts = [
                base.required(h.get("name"), "source_hosts", host_check) for h in hosts
            ]
            ports = [base.parse_int(h, "port", "disk/source/host", "source_ports") for h in hosts]
            self.source_ports = [] if all(p is None for p in ports) else ports
        else:
            self.source_path = source.get("file" if self.source_type == "file" else "dev")
