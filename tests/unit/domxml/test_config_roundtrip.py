"""Property-based round trips of the libvirt config objects.

For any valid disk or guest, parsing what ``format_dom`` wrote gives an
equal object, and rendering that again gives the same XML.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nova_disk_tuning import domxml as config
from tests.unit.domxml import test_config_strategies as strategies

_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(strategies.disks(iothread_ids=(1, 2, 3), slot=5))
def test_disk_round_trip(disk: config.LibvirtConfigGuestDisk) -> None:
    xml = disk.to_xml()
    parsed = config.LibvirtConfigGuestDisk()
    parsed.parse_str(xml)
    assert parsed == disk
    assert parsed.to_xml() == xml


@_SETTINGS
@given(strategies.guests())
def test_guest_round_trip(guest: config.LibvirtConfigGuest) -> None:
    xml = guest.to_xml()
    parsed = config.LibvirtConfigGuest()
    parsed.parse_str(xml)
    assert parsed == guest
    assert parsed.to_xml() == xml
    # Compact output parses to the same object as pretty output.
    compact = config.LibvirtConfigGuest()
    compact.parse_str(guest.to_xml(pretty_print=False))
    assert compact == guest


@_SETTINGS
@given(
    path=strategies.abs_path,
    name=strategies.xml_text,
    serial=strategies.serial_text,
)
def test_arbitrary_strings_survive(path: str, name: str, serial: str) -> None:
    guest = config.LibvirtConfigGuest(
        name=name,
        os_kernel=path,
        os_cmdline=name,
        devices=[
            config.LibvirtConfigGuestDisk(source_path=path, target_dev="vda", serial=serial),
            config.LibvirtConfigGuestSerial(type="file", source_path=path),
        ],
    )
    parsed = config.LibvirtConfigGuest()
    parsed.parse_str(guest.to_xml())
    assert parsed.name == name
    assert parsed.os_cmdline == name
    assert parsed.devices[0].source_path == path
    assert parsed.devices[0].serial == serial
    assert parsed.devices[1].source_path == path


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.integers(1, 8), st.lists(st.integers(0, 15), max_size=4), max_size=4))
def test_iothread_queue_mapping_keeps_order(mapping: dict[int, list[int]]) -> None:
    disk = config.LibvirtConfigGuestDisk(target_dev="vda", driver_iothread_queues=mapping)
    parsed = config.LibvirtConfigGuestDisk()
    parsed.parse_str(disk.to_xml())
    assert list(parsed.driver_iothread_queues.items()) == list(mapping.items())
