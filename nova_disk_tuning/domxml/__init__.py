"""libvirt domain XML as config objects (Nova-compatible names, no policy).

The objects translate between Python and libvirt domain XML: they render
exactly what they are given, and ``parse_dom`` reads back everything
``format_dom`` writes. Values are checked when they are assigned (and again
when rendered), so a value libvirt would reject fails here, with a message
that names the attribute, the element and the allowed values.

``base`` is the machinery (checks, parsing helpers), ``disk`` the
``<disk>``, ``address`` device addresses, ``devices`` the other devices and
``guest`` the ``<domain>``. Every public name is importable from here.
"""

from nova_disk_tuning.domxml.address import (
    LibvirtConfigGuestDeviceAddress,
    LibvirtConfigGuestDeviceAddressDrive,
    LibvirtConfigGuestDeviceAddressPCI,
    parse_device_address,
)
from nova_disk_tuning.domxml.base import LibvirtConfigObject
from nova_disk_tuning.domxml.devices import (
    SCSI_CONTROLLER_MODELS,
    LibvirtConfigGuestCharBase,
    LibvirtConfigGuestConsole,
    LibvirtConfigGuestController,
    LibvirtConfigGuestSerial,
    LibvirtConfigMemoryBalloon,
)
from nova_disk_tuning.domxml.disk import LibvirtConfigGuestDisk
from nova_disk_tuning.domxml.disk_values import (
    DISK_BUSES,
    DISK_CACHE_MODES,
    DISK_DETECT_ZEROES,
    DISK_DEVICES,
    DISK_DISCARD_MODES,
    DISK_ERROR_POLICIES,
    DISK_FORMATS,
    DISK_IO_MODES,
    DISK_RERROR_POLICIES,
    DISK_SOURCE_TYPES,
    IOTUNE_ELEMENTS,
    NETWORK_PROTOCOLS,
)
from nova_disk_tuning.domxml.guest import LibvirtConfigGuest

__all__ = [
    "DISK_BUSES",
    "DISK_CACHE_MODES",
    "DISK_DETECT_ZEROES",
    "DISK_DEVICES",
    "DISK_DISCARD_MODES",
    "DISK_ERROR_POLICIES",
    "DISK_FORMATS",
    "DISK_IO_MODES",
    "DISK_RERROR_POLICIES",
    "DISK_SOURCE_TYPES",
    "IOTUNE_ELEMENTS",
    "NETWORK_PROTOCOLS",
    "SCSI_CONTROLLER_MODELS",
    "LibvirtConfigGuest",
    "LibvirtConfigGuestCharBase",
    "LibvirtConfigGuestConsole",
    "LibvirtConfigGuestController",
    "LibvirtConfigGuestDeviceAddress",
    "LibvirtConfigGuestDeviceAddressDrive",
    "LibvirtConfigGuestDeviceAddressPCI",
    "LibvirtConfigGuestDisk",
    "LibvirtConfigGuestSerial",
    "LibvirtConfigMemoryBalloon",
    "LibvirtConfigObject",
    "parse_device_address",
]
