"""Exact-XML and validation tests for the libvirt config objects.

Attribute order is ignored, child order is significant (assert_xml_equal).
"""

from __future__ import annotations

import pytest
from lxml import etree

from nova_disk_tuning import domxml as config
from nova_disk_tuning import exception
from tests.unit.domxml.test_config_strategies import assert_xml_equal

SECRET = "a1b2c3d4-0000-4000-8000-123456789abc"


def round_trip(obj: config.LibvirtConfigObject) -> config.LibvirtConfigObject:
    parsed = type(obj)()
    parsed.parse_str(obj.to_xml())
    assert parsed == obj
    assert parsed.to_xml() == obj.to_xml()
    return parsed


# -- the comparison helper itself -----------------------------------------------------


def test_xml_helper_ignores_attribute_order_but_not_child_order() -> None:
    assert_xml_equal("<a x='1' y='2'><b/><c/></a>", "<a y='2' x='1'>\n  <b/>\n  <c/>\n</a>")
    with pytest.raises(AssertionError):
        assert_xml_equal("<a><b/><c/></a>", "<a><c/><b/></a>")
    with pytest.raises(AssertionError):
        assert_xml_equal("<a x='1'/>", "<a x='2'/>")
    with pytest.raises(AssertionError):
        assert_xml_equal("<a>t</a>", "<a>u</a>")


# -- disks ------------------------------------------------------------------------------


def test_file_disk() -> None:
    disk = config.LibvirtConfigGuestDisk(
        source_type="file",
        source_path="/var/lib/nova/instances/uuid/disk",
        driver_name="qemu",
        driver_format="qcow2",
        driver_cache="none",
        driver_io="native",
        driver_discard="unmap",
        driver_detect_zeroes="unmap",
        target_dev="vda",
        target_bus="virtio",
    )
    assert_xml_equal(
        """
        <disk type="file" device="disk">
          <driver name="qemu" type="qcow2" cache="none" io="native" discard="unmap"
                  detect_zeroes="unmap"/>
          <source file="/var/lib/nova/instances/uuid/disk"/>
          <target dev="vda" bus="virtio"/>
        </disk>""",
        disk.to_xml(),
    )
    round_trip(disk)


def test_block_disk() -> None:
    disk = config.LibvirtConfigGuestDisk(
        source_type="block",
        source_path="/dev/mapper/vg-lv",
        driver_name="qemu",
        driver_format="raw",
        driver_cache="directsync",
        driver_io="io_uring",
        target_dev="vdb",
        target_bus="virtio",
    )
    assert_xml_equal(
        """
        <disk type="block" device="disk">
          <driver name="qemu" type="raw" cache="directsync" io="io_uring"/>
          <source dev="/dev/mapper/vg-lv"/>
          <target dev="vdb" bus="virtio"/>
        </disk>""",
        disk.to_xml(),
    )
    round_trip(disk)


def test_rbd_disk_with_hosts_ports_and_auth() -> None:
    disk = config.LibvirtConfigGuestDisk(
        source_type="network",
        source_protocol="rbd",
        source_name="volumes/volume-1",
        source_hosts=["mon1.example.org", "192.0.2.7", "2001:db8::1"],
        source_ports=["6789", None, 3300],  # Nova's connection_info carries strings
        auth_username="cinder",
        auth_secret_type="ceph",
        auth_secret_uuid=SECRET,
        driver_name="qemu",
        driver_format="raw",
        driver_cache="writeback",
        target_dev="vdc",
        target_bus="virtio",
        serial="volume-1",
    )
    assert disk.source_ports == [6789, None, 3300]
    assert_xml_equal(
        f"""
        <disk type="network" device="disk">
          <driver name="qemu" type="raw" cache="writeback"/>
          <source protocol="rbd" name="volumes/volume-1">
            <host name="mon1.example.org" port="6789"/>
            <host name="192.0.2.7"/>
            <host name="2001:db8::1" port="3300"/>
          </source>
          <auth username="cinder"><secret type="ceph" uuid="{SECRET}"/></auth>
          <target dev="vdc" bus="virtio"/>
          <serial>volume-1</serial>
        </disk>""",
        disk.to_xml(),
    )
    round_trip(disk)


def test_rbd_disk_without_ports() -> None:
    disk = config.LibvirtConfigGuestDisk(
        source_type="network",
        source_protocol="rbd",
        source_name="p/v",
        source_hosts=["a", "b"],
        target_dev="vda",
    )
    assert_xml_equal(
        """
        <disk type="network" device="disk">
          <source protocol="rbd" name="p/v"><host name="a"/><host name="b"/></source>
          <target dev="vda"/>
        </disk>""",
        disk.to_xml(),
    )
    assert round_trip(disk).source_ports == []


def test_empty_cdrom() -> None:
    disk = config.LibvirtConfigGuestDisk(
        source_device="cdrom", target_dev="sda", target_bus="sata", readonly=True
    )
    assert_xml_equal(
        """
        <disk type="file" device="cdrom">
          <target dev="sda" bus="sata"/>
          <readonly/>
        </disk>""",
        disk.to_xml(),
    )
    round_trip(disk)


def test_lun_with_drive_address_and_shareable() -> None:
    disk = config.LibvirtConfigGuestDisk(
        source_type="block",
        source_device="lun",
        source_path="/dev/disk/by-path/ip-192.0.2.1:3260-iscsi-iqn.x-lun-1",
        target_dev="sdb",
        target_bus="scsi",
        shareable=True,
        device_addr=config.LibvirtConfigGuestDeviceAddressDrive(controller=0, bus=0, unit=1),
    )
    assert_xml_equal(
        """
        <disk type="block" device="lun">
          <source dev="/dev/disk/by-path/ip-192.0.2.1:3260-iscsi-iqn.x-lun-1"/>
          <target dev="sdb" bus="scsi"/>
          <shareable/>
          <address type="drive" controller="0" bus="0" target="0" unit="1"/>
        </disk>""",
        disk.to_xml(),
    )
    parsed = round_trip(disk)
    assert isinstance(parsed.device_addr, config.LibvirtConfigGuestDeviceAddressDrive)


def test_every_driver_attribute() -> None:
    disk = config.LibvirtConfigGuestDisk(
        source_path="/d",
        target_dev="vda",
        target_bus="virtio",
        driver_name="qemu",
        driver_format="qcow2",
        driver_cache="none",
        driver_error_policy="enospace",
        driver_rerror_policy="report",
        driver_io="native",
        driver_copy_on_read="on",
        driver_discard="unmap",
        driver_iothread=2,
        driver_detect_zeroes="on",
        driver_queues=4,
        driver_queue_size=256,
        driver_discard_no_unref="on",
    )
    assert_xml_equal(
        """
        <disk type="file" device="disk">
          <driver name="qemu" type="qcow2" cache="none" error_policy="enospace"
                  rerror_policy="report" io="native" copy_on_read="on" discard="unmap"
                  iothread="2" detect_zeroes="on" queues="4" queue_size="256"
                  discard_no_unref="on"/>
          <source file="/d"/>
          <target dev="vda" bus="virtio"/>
        </disk>""",
        disk.to_xml(),
    )
    round_trip(disk)


def test_driver_written_for_io_alone() -> None:
    # Nova drops <driver> when io is its only attribute; the io mode would be lost.
    disk = config.LibvirtConfigGuestDisk(source_path="/d", target_dev="vda", driver_io="threads")
    driver = etree.fromstring(disk.to_xml()).find("driver")
    assert driver is not None
    assert dict(driver.attrib) == {"io": "threads"}


def test_no_driver_element_when_nothing_set() -> None:
    disk = config.LibvirtConfigGuestDisk(source_path="/d", target_dev="vda")
    assert etree.fromstring(disk.to_xml()).find("driver") is None


def test_per_queue_iothread_mapping() -> None:
    disk = config.LibvirtConfigGuestDisk(
        source_path="/d",
        target_dev="vda",
        target_bus="virtio",
        driver_queues=3,
        driver_iothread_queues={2: [0, 2], 1: [1]},
    )
    assert_xml_equal(
        """
        <disk type="file" device="disk">
          <driver queues="3">
            <iothreads>
              <iothread id="2"><queue id="0"/><queue id="2"/></iothread>
              <iothread id="1"><queue id="1"/></iothread>
            </iothreads>
          </driver>
          <source file="/d"/>
          <target dev="vda" bus="virtio"/>
        </disk>""",
        disk.to_xml(),
    )
    assert list(round_trip(disk).driver_iothread_queues) == [2, 1]


def test_iotune_every_field() -> None:
    values = {}
    disk = config.LibvirtConfigGuestDisk(source_path="/d", target_dev="vda")
    # read/write_* for bytes, total_* for iops: the two may not be combined per group.
    for number, tag in enumerate(config.IOTUNE_ELEMENTS, start=1):
        total_bytes = tag.startswith("total_bytes")
        split_iops = tag.startswith(("read_iops", "write_iops"))
        if total_bytes or split_iops:
            continue
        values[tag] = number * 100
        setattr(disk, f"disk_{tag}", number * 100)
    expected = "".join(f"<{tag}>{value}</{tag}>" for tag, value in values.items())
    assert_xml_equal(
        f"""
        <disk type="file" device="disk">
          <source file="/d"/>
          <target dev="vda"/>
          <iotune>{expected}</iotune>
        </disk>""",
        disk.to_xml(),
    )
    assert list(values)[:3] == ["read_bytes_sec", "write_bytes_sec", "total_iops_sec"]
    assert "size_iops_sec" in values and "write_bytes_sec_max_length" in values
    round_trip(disk)


def test_nova_iotune_names_exist() -> None:
    disk = config.LibvirtConfigGuestDisk()
    names = [
        f"disk_{op}_{kind}_sec{suffix}"
        for op in ("read", "write", "total")
        for kind in ("bytes", "iops")
        for suffix in ("", "_max")
    ]
    for name in [*names, "disk_size_iops_sec"]:
        assert getattr(disk, name) is None


def test_blockio_boot_alias_serial_and_pci_address() -> None:
    disk = config.LibvirtConfigGuestDisk(
        source_path="/d",
        target_dev="vda",
        target_bus="virtio",
        logical_block_size=512,
        physical_block_size=4096,
        serial="vol 1.2+x",
        boot_order=1,
        alias="ua-disk0",
        device_addr=config.LibvirtConfigGuestDeviceAddressPCI(
            domain=0, bus=0, slot=0x1F, function=3
        ),
    )
    assert_xml_equal(
        """
        <disk type="file" device="disk">
          <source file="/d"/>
          <blockio logical_block_size="512" physical_block_size="4096"/>
          <target dev="vda" bus="virtio"/>
          <serial>vol 1.2+x</serial>
          <boot order="1"/>
          <alias name="ua-disk0"/>
          <address type="pci" domain="0x0000" bus="0x00" slot="0x1f" function="0x3"/>
        </disk>""",
        disk.to_xml(),
    )
    round_trip(disk)


@pytest.mark.parametrize("given", [1, "1", 7, "07"])
def test_boot_order_takes_nova_strings(given: object) -> None:
    # Nova's driver sets boot_order from the block device mapping as a string.
    disk = config.LibvirtConfigGuestDisk(source_path="/d", target_dev="vda", boot_order=given)
    assert disk.boot_order == int(str(given))
    assert f'<boot order="{int(str(given))}"/>' in disk.to_xml()


@pytest.mark.parametrize("given", ["0", "-1", "x", "", " 1", "1.0", 0, -1, True, 1.0])
def test_boot_order_refuses(given: object) -> None:
    with pytest.raises(exception.InvalidConfigValue, match="boot_order"):
        config.LibvirtConfigGuestDisk(boot_order=given)


def test_parse_libvirt_output_ignores_unknown_elements() -> None:
    xml = """
    <disk type='file' device='disk' snapshot='no'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source file='/d' index='1'><seclabel model='dac' relabel='no'/></source>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <iotune><total_bytes_sec>1000</total_bytes_sec><group_name>g</group_name></iotune>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>"""
    disk = config.LibvirtConfigGuestDisk()
    disk.parse_str(xml)
    assert disk == config.LibvirtConfigGuestDisk(
        source_path="/d",
        driver_name="qemu",
        driver_format="raw",
        driver_cache="none",
        driver_io="native",
        target_dev="vda",
        target_bus="virtio",
        disk_total_bytes_sec=1000,
        alias="virtio-disk0",
        device_addr=config.LibvirtConfigGuestDeviceAddressPCI(slot=4),
    )


# -- controller, serial, console ---------------------------------------------------------


def test_virtio_scsi_controller() -> None:
    controller = config.LibvirtConfigGuestController(
        type="scsi", model="virtio-scsi", index=0, driver_iothread=1, driver_queues=4
    )
    assert_xml_equal(
        """
        <controller type="scsi" index="0" model="virtio-scsi">
          <driver queues="4" iothread="1"/>
        </controller>""",
        controller.to_xml(),
    )
    round_trip(controller)


def test_controller_with_address() -> None:
    controller = config.LibvirtConfigGuestController(
        type="scsi",
        model="virtio-scsi",
        index=1,
        device_addr=config.LibvirtConfigGuestDeviceAddressPCI(slot=5),
    )
    assert_xml_equal(
        """
        <controller type="scsi" index="1" model="virtio-scsi">
          <address type="pci" domain="0x0000" bus="0x00" slot="0x05" function="0x0"/>
        </controller>""",
        controller.to_xml(),
    )
    round_trip(controller)


def test_serial_file_and_console_pty() -> None:
    serial = config.LibvirtConfigGuestSerial(
        type="file", source_path="/var/log/console.log", target_type="isa-serial", target_port=0
    )
    console = config.LibvirtConfigGuestConsole(type="pty", target_type="serial", target_port=0)
    assert_xml_equal(
        """
        <serial type="file">
          <source path="/var/log/console.log"/>
          <target type="isa-serial" port="0"/>
        </serial>""",
        serial.to_xml(),
    )
    assert_xml_equal(
        '<console type="pty"><target type="serial" port="0"/></console>', console.to_xml()
    )
    round_trip(serial)
    round_trip(console)


def test_serial_file_needs_path() -> None:
    with pytest.raises(exception.InvalidConfigValue, match="source_path of <serial><source>"):
        config.LibvirtConfigGuestSerial(type="file").to_xml()


# -- guests ---------------------------------------------------------------------------------


def _guest(**kwargs: object) -> config.LibvirtConfigGuest:
    values = {
        "virt_type": "qemu",
        "name": "instance-1",
        "uuid": "4b4c6d2e-1f6a-4f0e-9a53-1c0d7c5e2b11",
        "memory": 262144,
        "vcpus": 2,
    }
    values.update(kwargs)
    return config.LibvirtConfigGuest(**values)


def test_guest_with_iothreads_and_bound_devices() -> None:
    guest = _guest(
        iothreads=2,
        iothread_ids=[1, 2],
        os_arch="x86_64",
        os_mach_type="pc",
        os_boot_dev=["hd"],
        features=["acpi", "apic"],
        clock_offset="utc",
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="destroy",
        emulator="/usr/bin/qemu-system-x86_64",
        devices=[
            config.LibvirtConfigGuestDisk(
                source_path="/d", target_dev="vda", target_bus="virtio", driver_iothread=1
            ),
            config.LibvirtConfigGuestController(
                type="scsi", model="virtio-scsi", driver_iothread=2, driver_queues=2
            ),
            config.LibvirtConfigMemoryBalloon(),
        ],
    )
    assert_xml_equal(
        """
        <domain type="qemu">
          <name>instance-1</name>
          <uuid>4b4c6d2e-1f6a-4f0e-9a53-1c0d7c5e2b11</uuid>
          <memory unit="KiB">262144</memory>
          <vcpu>2</vcpu>
          <iothreads>2</iothreads>
          <iothreadids><iothread id="1"/><iothread id="2"/></iothreadids>
          <os>
            <type arch="x86_64" machine="pc">hvm</type>
            <boot dev="hd"/>
          </os>
          <features><acpi/><apic/></features>
          <clock offset="utc"/>
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>destroy</on_crash>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type="file" device="disk">
              <driver iothread="1"/>
              <source file="/d"/>
              <target dev="vda" bus="virtio"/>
            </disk>
            <controller type="scsi" index="0" model="virtio-scsi">
              <driver queues="2" iothread="2"/>
            </controller>
            <memballoon model="none"/>
          </devices>
        </domain>""",
        guest.to_xml(),
    )
    parsed = round_trip(guest)
    assert [type(d) for d in parsed.devices] == [
        config.LibvirtConfigGuestDisk,
        config.LibvirtConfigGuestController,
        config.LibvirtConfigMemoryBalloon,
    ]


def test_guest_cpu_pinning() -> None:
    guest = _guest(
        vcpus=4,
        iothreads=2,
        vcpu_pins={0: [0], 1: [1], 2: [2, 3, 5], 3: [0, 1]},
        iothread_pins={2: [3], 1: [2]},
        emulator_pin=[3],
    )
    assert_xml_equal(
        """
        <domain type="qemu">
          <name>instance-1</name>
          <uuid>4b4c6d2e-1f6a-4f0e-9a53-1c0d7c5e2b11</uuid>
          <memory unit="KiB">262144</memory>
          <vcpu>4</vcpu>
          <iothreads>2</iothreads>
          <cputune>
            <vcpupin vcpu="0" cpuset="0"/>
            <vcpupin vcpu="1" cpuset="1"/>
            <vcpupin vcpu="2" cpuset="2-3,5"/>
            <vcpupin vcpu="3" cpuset="0-1"/>
            <emulatorpin cpuset="3"/>
            <iothreadpin iothread="2" cpuset="3"/>
            <iothreadpin iothread="1" cpuset="2"/>
          </cputune>
          <os><type>hvm</type></os>
          <devices/>
        </domain>
        """,
        guest.to_xml(),
    )
    assert round_trip(guest) == guest


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", [0]), ("0-3,^2", [0, 1, 3]), ("5,1-2", [1, 2, 5]), ("0-7,^0-6", [7])],
)
def test_cpusets_as_libvirt_writes_them(text: str, cpus: list[int]) -> None:
    assert config.guest.parse_cpuset(text, "p", "n") == cpus
    assert config.guest.parse_cpuset(config.guest.format_cpuset(cpus), "p", "n") == cpus


@pytest.mark.parametrize("text", ["", "a", "1-", "0-x", "3-1", "0-16384", "0-4000000000"])
def test_a_cpuset_libvirt_would_not_write_is_refused(text: str) -> None:
    with pytest.raises(exception.InvalidConfigValue, match="a cpuset like"):
        config.guest.parse_cpuset(text, "domain/cputune/vcpupin", "vcpu_pins")


def test_a_cpuset_that_leaves_no_cpu_is_refused() -> None:
    with pytest.raises(exception.InvalidConfigValue, match="at least one CPU"):
        config.guest.parse_cpuset("0,^0", "domain/cputune/emulatorpin", "emulator_pin")


def test_a_vcpu_pinned_twice_is_refused_when_parsed() -> None:
    text = (
        _guest()
        .to_xml()
        .replace(
            "<vcpu>2</vcpu>",
            '<vcpu>2</vcpu><cputune><vcpupin vcpu="0" cpuset="0"/><vcpupin vcpu="0" cpuset="1"/>'
            "</cputune>",
        )
    )
    with pytest.raises(exception.InvalidConfigValue, match="one pin per vCPU"):
        config.LibvirtConfigGuest().parse_str(text)


def test_iothreads_libvirt_numbers_beside_the_named_ones() -> None:
    guest = _guest(iothreads=3, iothread_ids=[5], iothread_pins={1: [0], 2: [1], 5: [0]})
    assert guest.iothread_id_set() == {1, 2, 5}
    guest.to_xml()  # pins to 1 and 2 are libvirt's own ids: accepted


def test_guest_direct_kernel_boot_with_serial_console() -> None:
    guest = _guest(
        os_kernel="/boot/vmlinuz-6.1.0-amd64",
        os_initrd="/boot/initrd.img",
        os_cmdline="console=ttyS0 root=/dev/vda rw quiet",
        devices=[
            config.LibvirtConfigGuestSerial(type="file", source_path="/tmp/console.log"),
            config.LibvirtConfigGuestConsole(type="pty", target_type="serial"),
        ],
    )
    assert_xml_equal(
        """
        <domain type="qemu">
          <name>instance-1</name>
          <uuid>4b4c6d2e-1f6a-4f0e-9a53-1c0d7c5e2b11</uuid>
          <memory unit="KiB">262144</memory>
          <vcpu>2</vcpu>
          <os>
            <type>hvm</type>
            <kernel>/boot/vmlinuz-6.1.0-amd64</kernel>
            <initrd>/boot/initrd.img</initrd>
            <cmdline>console=ttyS0 root=/dev/vda rw quiet</cmdline>
          </os>
          <devices>
            <serial type="file"><source path="/tmp/console.log"/></serial>
            <console type="pty"><target type="serial"/></console>
          </devices>
        </domain>""",
        guest.to_xml(),
    )
    round_trip(guest)


def test_guest_memory_units_are_converted_to_kib() -> None:
    guest = config.LibvirtConfigGuest()
    guest.parse_str(
        "<domain type='kvm'><name>g</name><memory unit='MiB'>512</memory><vcpu>1</vcpu></domain>"
    )
    assert guest.memory == 512 * 1024
    guest.parse_str("<domain type='kvm'><name>g</name><memory>1024</memory></domain>")
    assert guest.memory == 1024


# -- special characters --------------------------------------------------------------------


def test_special_characters_are_escaped_and_survive() -> None:
    path = "/srv/in stänces/a&b/<c>/\"d\"/'e'/\u4e2d.img"
    name = "vm & <friends> \"quoted\" 'single' \u00e9\U0001f600"
    guest = _guest(
        name=name,
        os_kernel=path,
        os_cmdline="console=ttyS0 init=/bin/sh -c 'echo \"a&b\" > /x'",
        devices=[
            config.LibvirtConfigGuestDisk(
                source_path=path, target_dev="vda", serial="serial with spaces+dots.1"
            ),
            config.LibvirtConfigGuestSerial(type="file", source_path=path),
        ],
    )
    xml = guest.to_xml()
    assert "a&amp;b/&lt;c&gt;" in xml
    assert "&lt;friends&gt;" in xml
    assert 'file="/srv/in stänces/a&amp;b/&lt;c&gt;/&quot;d&quot;' in xml
    parsed = round_trip(guest)
    assert parsed.name == name
    assert parsed.devices[0].source_path == path
    assert parsed.devices[1].source_path == path
    # Also through libxml2's own parser, as libvirt would read it.
    assert etree.fromstring(xml.encode()).findtext("name") == name


# -- validation --------------------------------------------------------------------------------

BAD_VALUES = [
    (config.LibvirtConfigGuestDisk, "driver_io", "fast", "<disk><driver>", "'io_uring'"),
    (config.LibvirtConfigGuestDisk, "driver_cache", "writearound", "<disk><driver>", "'unsafe'"),
    (config.LibvirtConfigGuestDisk, "driver_discard", "trim", "<disk><driver>", "'unmap'"),
    (config.LibvirtConfigGuestDisk, "driver_detect_zeroes", "yes", "<disk><driver>", "'on'"),
    (config.LibvirtConfigGuestDisk, "driver_error_policy", "panic", "<disk><driver>", "'enospace'"),
    (config.LibvirtConfigGuestDisk, "driver_rerror_policy", "enospace", "<disk><driver>", "'stop'"),
    (config.LibvirtConfigGuestDisk, "driver_copy_on_read", "yes", "<disk><driver>", "'on'"),
    (config.LibvirtConfigGuestDisk, "driver_discard_no_unref", True, "<disk><driver>", "'off'"),
    (config.LibvirtConfigGuestDisk, "driver_format", "qcow3", "<disk><driver>", "'qcow2'"),
    (config.LibvirtConfigGuestDisk, "target_bus", "nvme", "<disk><target>", "'virtio'"),
    (config.LibvirtConfigGuestDisk, "source_type", "volume", "<disk>", "'network'"),
    (config.LibvirtConfigGuestDisk, "source_type", None, "<disk>", "'file'"),
    (config.LibvirtConfigGuestDisk, "source_device", "tape", "<disk>", "'lun'"),
    (config.LibvirtConfigGuestDisk, "source_protocol", "ceph", "<disk><source>", "'rbd'"),
    (config.LibvirtConfigGuestDisk, "driver_iothread", 0, "<disk><driver>", "positive"),
    (config.LibvirtConfigGuestDisk, "driver_queues", -1, "<disk><driver>", "positive"),
    (config.LibvirtConfigGuestDisk, "driver_queue_size", True, "<disk><driver>", "positive"),
    (config.LibvirtConfigGuestDisk, "driver_queues", "4", "<disk><driver>", "positive"),
    (config.LibvirtConfigGuestDisk, "disk_total_iops_sec", 0, "<disk><iotune>", "positive"),
    (config.LibvirtConfigGuestDisk, "boot_order", 0, "<disk><boot>", "positive"),
    (config.LibvirtConfigGuestDisk, "readonly", "yes", "<disk><readonly>", "True"),
    (config.LibvirtConfigGuestDisk, "logical_block_size", 4095, "<disk><blockio>", "4096"),
    (config.LibvirtConfigGuestDisk, "serial", "a&b", "<disk><serial>", "A-Za-z0-9"),
    (config.LibvirtConfigGuestDisk, "source_path", "", "<disk><source>", "non-empty"),
    (config.LibvirtConfigGuestDisk, "source_path", "/a\x00b", "<disk><source>", "XML"),
    (config.LibvirtConfigGuestDisk, "source_hosts", ["a b"], "<disk><source><host>", "host"),
    (config.LibvirtConfigGuestDisk, "source_ports", [70000], "<disk><source><host>", "65535"),
    (config.LibvirtConfigGuestDisk, "auth_secret_uuid", "nope", "<disk><auth><secret>", "UUID"),
    (config.LibvirtConfigGuestDisk, "device_addr", "pci", "<disk><address>", "instances"),
    (config.LibvirtConfigGuestController, "type", "nvme", "<controller>", "'scsi'"),
    (config.LibvirtConfigGuestController, "driver_iothread", 0, "<controller><driver>", "pos"),
    (config.LibvirtConfigGuestSerial, "type", "tcp", "<serial>", "'pty'"),
    (config.LibvirtConfigGuestConsole, "target_type", "sclp", "<console><target>", "'virtio'"),
    (config.LibvirtConfigMemoryBalloon, "model", "xen", "<memballoon>", "'none'"),
    (config.LibvirtConfigGuestDeviceAddressPCI, "slot", 32, "<address>", "0..31"),
    (config.LibvirtConfigGuest, "virt_type", "xen", "<domain>", "'kvm'"),
    (config.LibvirtConfigGuest, "on_crash", "explode", "<domain><on_crash>", "'coredump-"),
    (config.LibvirtConfigGuest, "os_boot_dev", ["usb"], "<domain><os><boot>", "'network'"),
    (config.LibvirtConfigGuest, "features", ["hyperv"], "<domain><features>", "'acpi'"),
    (config.LibvirtConfigGuest, "iothreads", 0, "<domain><iothreads>", "positive"),
    (config.LibvirtConfigGuest, "iothread_ids", [1, -2], "<domain><iothreadids>", "positive"),
    (config.LibvirtConfigGuest, "uuid", "12345", "<domain><uuid>", "UUID"),
    (config.LibvirtConfigGuest, "devices", [object()], "<domain><devices>", "Disk"),
]


@pytest.mark.parametrize(
    ("cls", "attribute", "value", "element", "allowed"),
    BAD_VALUES,
    ids=[f"{c.__name__}.{a}={v!r}" for c, a, v, _, _ in BAD_VALUES],
)
def test_invalid_value_is_refused_when_set(cls, attribute, value, element, allowed) -> None:
    obj = cls()
    with pytest.raises(exception.InvalidConfigValue) as info:
        setattr(obj, attribute, value)
    message = str(info.value)
    assert f"for {attribute} of {element}" in message
    assert "allowed values are" in message and allowed in message
    assert isinstance(info.value, exception.NovaDiskTuningException)
    with pytest.raises(exception.InvalidConfigValue):
        cls(**{attribute: value})


def test_in_place_changes_are_checked_when_rendered() -> None:
    guest = _guest(os_boot_dev=["hd"], iothreads=1)
    guest.os_boot_dev.append("usb")
    with pytest.raises(exception.InvalidConfigValue, match="os_boot_dev"):
        guest.to_xml()
    disk = config.LibvirtConfigGuestDisk(target_dev="vda", driver_iothread_queues={1: [0]})
    disk.driver_iothread_queues[1].append(-1)
    with pytest.raises(exception.InvalidConfigValue, match="driver_iothread_queues"):
        disk.to_xml()
    disk.driver_iothread_queues = {1: [0]}
    guest.os_boot_dev = []
    guest.devices = [disk]
    disk.driver_io = "native"
    guest.devices[0].__dict__["driver_io"] = "bogus"  # bypasses __setattr__ on purpose
    with pytest.raises(exception.InvalidConfigValue, match="driver_io"):
        guest.to_xml()


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="driver_aio"):
        config.LibvirtConfigGuestDisk(driver_aio="native")


def _disk(**kwargs: object) -> config.LibvirtConfigGuestDisk:
    values: dict[str, object] = {"source_path": "/d", "target_dev": "vda"}
    values.update(kwargs)
    return config.LibvirtConfigGuestDisk(**values)


BAD_COMBINATIONS = [
    ({"target_dev": None}, exception.InvalidDiskConfig, "target_dev is not set"),
    ({"driver_detect_zeroes": "unmap"}, exception.InvalidConfigValue, "driver_discard='unmap'"),
    (
        {"driver_iothread": 1, "driver_iothread_queues": {1: [0]}},
        exception.InvalidDiskConfig,
        "exclude each other",
    ),
    ({"driver_iothread": 1, "target_bus": "sata"}, exception.InvalidDiskConfig, "bus 'virtio'"),
    (
        {"disk_total_bytes_sec": 1, "disk_read_bytes_sec": 2},
        exception.InvalidDiskConfig,
        "disk_total_bytes_sec cannot be combined",
    ),
    (
        {"disk_read_iops_sec_max_length": 5},
        exception.InvalidDiskConfig,
        "needs disk_read_iops_sec_max",
    ),
    ({"auth_username": "u"}, exception.InvalidDiskConfig, "auth_secret_type"),
    ({"source_protocol": "rbd"}, exception.InvalidDiskConfig, "network disks"),
    ({"source_device": "lun"}, exception.InvalidDiskConfig, "'block' with a source_path"),
    (
        {"source_device": "lun", "source_type": "block", "driver_format": "qcow2"},
        exception.InvalidDiskConfig,
        "must use driver_format 'raw'",
    ),
    (
        {"source_device": "lun", "source_type": "block", "source_path": None},
        exception.InvalidDiskConfig,
        "'block' with a source_path",
    ),
    (
        {"target_bus": "virtio", "device_addr": config.LibvirtConfigGuestDeviceAddressDrive()},
        exception.InvalidDiskConfig,
        "needs a pci address",
    ),
    (
        {"source_type": "network", "source_path": None, "source_protocol": "nbd"},
        exception.InvalidDiskConfig,
        "takes 1 source_hosts, got 0",
    ),
    (
        {
            "source_type": "network",
            "source_path": None,
            "source_protocol": "rbd",
            "source_name": "p/v",
            "source_hosts": ["a", "b"],
            "source_ports": [1],
        },
        exception.InvalidDiskConfig,
        "one port",
    ),
    (
        {"source_type": "network", "source_path": None, "source_hosts": ["a"]},
        exception.InvalidDiskConfig,
        "source_protocol and source_name",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "text"), BAD_COMBINATIONS)
def test_invalid_disk_combination_is_refused_when_rendered(kwargs, error, text) -> None:
    disk = _disk(**kwargs)  # each value alone is fine
    with pytest.raises(error, match=text.replace("(", r"\(")) as info:
        disk.format_dom()
    assert isinstance(info.value, exception.NovaDiskTuningException)


BAD_GUESTS = [
    ({"name": None}, "name of <domain><name>"),
    ({"iothreads": 1, "iothread_ids": [1, 2]}, "len\\(iothread_ids\\) = 2"),
    (
        {"iothreads": 2, "devices": [_disk(driver_iothread=3)]},
        "ids defined by the domain: \\[1, 2\\]",
    ),
    ({"iothread_ids": [4], "devices": [_disk(driver_iothread_queues={1: []})]}, "\\[4\\]"),
    ({"devices": [_disk(driver_iothread=1)]}, "ids defined by the domain: none"),
    (
        {"devices": [config.LibvirtConfigGuestController(type="scsi", driver_iothread=1)]},
        "model='virtio-scsi'",
    ),
    ({"devices": [config.LibvirtConfigGuestController(type="scsi", model="x")]}, "'lsilogic'"),
    ({"devices": [config.LibvirtConfigGuestController()]}, "type of <controller>"),
    ({"os_boot_dev": ["hd"], "devices": [_disk(boot_order=1)]}, "boot_order"),
    ({"devices": [_disk(), _disk(source_path="/e")]}, "vda: target used by more than one"),
    (
        {"devices": [_disk(alias="ua-a"), _disk(target_dev="vdb", alias="ua-a")]},
        "'ua-a' for alias .* unique within the domain",
    ),
    ({"vcpu_pins": {2: [0]}}, "vCPU numbers below vcpus = 2"),
    ({"vcpu_pins": {0: []}}, "each with a host CPU"),
    (
        {"iothreads": 1, "iothread_pins": {2: [0]}},
        "IOThread ids defined by the domain \\(\\[1\\]\\)",
    ),
    ({"iothread_pins": {1: [0]}}, "\\(none\\)"),
]


@pytest.mark.parametrize(("kwargs", "text"), BAD_GUESTS)
def test_invalid_guest_is_refused_when_rendered(kwargs, text) -> None:
    guest = _guest(**kwargs)
    with pytest.raises(exception.NovaDiskTuningException, match=text):
        guest.to_xml()


def test_parse_errors() -> None:
    disk = config.LibvirtConfigGuestDisk()
    with pytest.raises(exception.InvalidConfig, match="cannot parse libvirt <disk> XML"):
        disk.parse_str("<disk><target dev='vda'></disk>")
    with pytest.raises(exception.InvalidConfigValue, match="'controller' for root element"):
        disk.parse_str("<controller type='scsi'/>")
    with pytest.raises(exception.InvalidConfigValue, match="'fast' for driver_io"):
        disk.parse_str("<disk type='file'><driver io='fast'/><target dev='vda'/></disk>")
    with pytest.raises(exception.InvalidConfigValue, match="'two' for boot_order"):
        disk.parse_str("<disk type='file'><boot order='two'/></disk>")
    with pytest.raises(exception.InvalidConfigValue, match="'floppy' for type of <address>"):
        config.parse_device_address(etree.fromstring("<address type='floppy'/>"))


def test_parse_accepts_declaration_leading_zeros_and_bytes() -> None:
    xml = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        "<disk type='file'><driver queues='04'/><target dev='vda'/>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x1A' function='0x0'/></disk>"
    )
    for document in (xml, xml.encode()):
        disk = config.LibvirtConfigGuestDisk()
        disk.parse_str(document)
        assert disk.driver_queues == 4
        assert disk.device_addr.slot == 0x1A


def test_equality_is_by_value_and_type() -> None:
    assert _disk() == _disk()
    assert _disk() != _disk(driver_io="native")
    assert _disk() != config.LibvirtConfigGuestController()
    addr = config.LibvirtConfigGuestDeviceAddressPCI(slot=1)
    assert addr != config.LibvirtConfigGuestDeviceAddressDrive()
    assert _disk(device_addr=addr) != _disk(device_addr=config.LibvirtConfigGuestDeviceAddressPCI())


LIVE_XML = """
<domain type='qemu' id='3'>
  <name>instance-1</name>
  <uuid>4b4c6d2e-1f6a-4f0e-9a53-1c0d7c5e2b11</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <iothreads>1</iothreads>
  <resource><partition>/machine</partition></resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/k</kernel>
    <cmdline>console=ttyS0</cmdline>
  </os>
  <features><acpi/><apic/><vmport state='off'/></features>
  <cpu mode='custom' match='exact' check='full'><model fallback='forbid'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native' iothread='1'/>
      <source file='/d' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/u'/>
      <target dev='sda' bus='usb'/>
      <address type='usb' bus='0' port='1'/>
    </disk>
    <disk type='nvme' device='disk'><target dev='vdz'/></disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'/>
    <controller type='ccid' index='0'/>
    <serial type='file'>
      <source path='/log'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target>
      <alias name='serial0'/>
    </serial>
    <serial type='tcp'><source mode='bind' host='127.0.0.1' service='4555'/></serial>
    <console type='pty' tty='/dev/pts/3'>
      <source path='/dev/pts/3'/>
      <target type='serial' port='0'/>
    </console>
    <input type='mouse' bus='ps2'/>
    <audio id='1' type='none'/>
    <memballoon model='virtio-transitional'/>
  </devices>
  <seclabel type='none' model='none'/>
</domain>
"""


def test_parse_live_qemu_xml_skips_what_it_does_not_model() -> None:
    guest = config.LibvirtConfigGuest()
    guest.parse_str(LIVE_XML)
    assert guest.features == ["acpi", "apic"]
    assert guest.os_mach_type == "pc-i440fx-7.2"
    assert guest.os_kernel == "/k" and guest.os_cmdline == "console=ttyS0"
    kinds = [(type(d).__name__, getattr(d, "target_dev", None) or d.type) for d in guest.devices]
    assert kinds == [
        ("LibvirtConfigGuestDisk", "vda"),
        ("LibvirtConfigGuestDisk", "sda"),
        ("LibvirtConfigGuestController", "usb"),
        ("LibvirtConfigGuestController", "pci"),
        ("LibvirtConfigGuestSerial", "file"),
        ("LibvirtConfigGuestConsole", "pty"),
    ]
    vda, sda = guest.devices[0], guest.devices[1]
    assert (vda.driver_io, vda.driver_cache, vda.driver_iothread) == ("native", "none", 1)
    assert vda.device_addr == config.LibvirtConfigGuestDeviceAddressPCI(slot=4)
    assert sda.device_addr is None  # a usb address is not modelled
    assert guest.devices[5].source_path == "/dev/pts/3"
    # What was read renders again and reads back the same.
    round_trip(guest)


def test_every_checked_attribute_is_annotated_for_type_checkers() -> None:
    import typing

    from nova_disk_tuning.domxml import base

    def subclasses(cls: type) -> list[type]:
        return [cls] + [c for sub in cls.__subclasses__() for c in subclasses(sub)]

    for cls in subclasses(base.LibvirtConfigObject):
        declared = set(cls.__dict__.get("checks", {}))
        annotated = set(getattr(cls, "__annotations__", {}))
        assert declared <= annotated, (cls.__name__, sorted(declared - annotated))
        typing.get_type_hints(cls)  # the annotations name real types
