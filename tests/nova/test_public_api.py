"""The drop-in's public methods keep the signatures of Nova's ComputeDriver.

Nova's own ``test_public_api_signatures`` holds its libvirt driver to them;
an override with ``*args, **kwargs`` breaks it (found by ``make nova-suites``).
"""

from nova import test
from nova.tests import fixtures as nova_fixtures
from nova.virt import driver as nova_driver
from nova.virt import fake

from nova_disk_tuning.nova.driver import LibvirtDriver


class PublicApiTest(test.NoDBTestCase):
    def test_the_signatures_are_the_compute_drivers(self):
        self.useFixture(nova_fixtures.LibvirtFixture())
        self.assertPublicAPISignatures(
            nova_driver.ComputeDriver(None), LibvirtDriver(fake.FakeVirtAPI(), True)
        )
