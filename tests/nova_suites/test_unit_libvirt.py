"""Nova's unit tests of its libvirt driver, image backends, block info, migration,
host, image cache and volume drivers (``nova.tests.unit.virt.libvirt``)."""

from tests.nova_suites import rebind

UNIT = [
    "nova.tests.unit.virt.libvirt.test_driver",
    "nova.tests.unit.virt.libvirt.test_imagebackend",
    "nova.tests.unit.virt.libvirt.test_imagecache",
    "nova.tests.unit.virt.libvirt.test_blockinfo",
    "nova.tests.unit.virt.libvirt.test_migration",
    "nova.tests.unit.virt.libvirt.test_host",
    *rebind.modules_in("nova.tests.unit.virt.libvirt.volume"),
]


def load_tests(loader, standard_tests, pattern):
    return rebind.load(loader, UNIT)
