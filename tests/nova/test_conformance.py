"""Nova's compute driver conformance suite, run against the drop-in driver.

``nova.tests.unit.virt.test_virt_drivers.LibvirtConnTestCase`` is the suite
Nova runs against its own libvirt driver (through fakelibvirt). The same
tests, unchanged, load ``nova.virt.disk_tuning.LibvirtDriver`` instead: the
way nova-compute loads it with ``compute_driver = disk_tuning.LibvirtDriver``.
Run by ``make nova-tests`` (stestr; Nova's test classes do not run under
pytest).
"""

from nova.tests.unit.virt import test_virt_drivers

DROP_IN = "nova.virt.disk_tuning.LibvirtDriver"


class DropInConformanceTestCase(test_virt_drivers.LibvirtConnTestCase):
    # Nova's setUp assigns its own driver before the base class imports it;
    # this property keeps the drop-in whatever setUp assigns.
    @property
    def driver_module(self):
        return DROP_IN

    @driver_module.setter
    def driver_module(self, value):
        pass

    def test_loaded_driver_is_the_drop_in(self):
        from nova_disk_tuning.nova.driver import LibvirtDriver

        self.assertIsInstance(self.connection, LibvirtDriver)
