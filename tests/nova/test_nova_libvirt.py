"""A named list of Nova's own libvirt driver tests, run against the drop-in.

These are Nova 34's tests about disk XML, cache modes, io modes, IOThreads and
the local disks a spawn creates (``nova/tests/unit/virt/libvirt/
test_driver.py``), unchanged, with ``nova.virt.libvirt.driver.LibvirtDriver``
replaced by the drop-in for each test: every ``LibvirtDriver(...)`` the tests
create is then ``disk_tuning.LibvirtDriver``. A test that fails because the
drop-in deliberately differs from Nova is listed in ``EXPECTED_FAILURES``
with the reason and run as an expected failure (an unexpected success fails
the run, so the list cannot go stale).
"""

import functools
import os
import re
import unittest

import fixtures
from nova.privsep import utils as privsep_utils
from nova.tests.functional.regressions import test_bug_2140537
from nova.tests.unit.virt.libvirt import test_driver
from nova.virt import fake
from nova.virt.libvirt.driver import LibvirtDriver as NovaLibvirtDriver

from nova_disk_tuning.nova.driver import LibvirtDriver
from nova_disk_tuning.policy.facts import DiskFacts
from tests.nova import harness

NAMED = [
    "test_xml_disk_driver",
    "test_xml_disk_bus_virtio",
    "test_xml_disk_bus_ide",
    "test_xml_disk_bus_sata",
    "test_xml_disk_bus_ide_and_virtio",
    "test_get_guest_config_disk_cachemodes_file",
    "test_get_guest_config_disk_cachemodes_block",
    "test_get_guest_config_disk_cachemodes_network",
    "test_get_guest_config_iothreads_instance",
    "test_get_guest_config_iothreadpin_matches_emulatorpin",
    "test_get_guest_config_iothreadpin_shared_emulator_threads",
    "test_get_guest_config_iothreadpin_numa_topology",
    "test_get_volume_config",
    "test_check_discard_for_attach_volume_no_unmap",
    "test_check_discard_for_attach_volume_blk_controller",
    "test_check_discard_for_attach_volume_valid_controller",
    "test_check_discard_for_attach_volume_blk_controller_no_unmap",
    "test_set_cache_mode",
    "test_set_cache_mode_shareable",
    "test_set_cache_mode_driver_io_writeback",
    "test_set_cache_mode_driver_io_writethrough",
    "test_set_cache_mode_driver_io_unsafe",
    "test_without_set_cache_mode_driver_io",
    "test_set_cache_mode_invalid_mode",
    "test_set_cache_mode_invalid_object",
    "test_create_image_with_swap",
    "test_create_image_with_ephemerals",
    "test_create_ephemeral_default",
    "test_create_swap_default",
]

# name -> why the drop-in fails it on purpose.
EXPECTED_FAILURES: dict[str, str] = {
    "test_get_guest_config_disk_cachemodes_file": (
        "disk_cachemodes file=directsync on a directory where O_DIRECT does not work "
        "(Nova's probe says so for this test's nonexistent instance directory): Nova "
        "renders directsync and QEMU then cannot open the disk; the policy demotes it "
        "to writethrough, the same flush semantics without O_DIRECT"
    ),
}


def _stand_in(path, *, name, probe, qemu_img, format, source_type, bus, shareable, driver):
    return DiskFacts(
        name=name,
        source_type=source_type or "file",
        format=format or "raw",
        path=path,
        size=1 << 30,
        allocated=1 << 30,
        fully_allocated=True,
        bus=bus,
        shareable=shareable,
        driver=driver,
        direct_io=privsep_utils.supports_direct_io(os.path.dirname(path)),
        storage_kind="local",
    )


class DropInLibvirtConnTestCase(test_driver.LibvirtConnTestCase):
    def setUp(self):
        super().setUp()
        self.useFixture(
            fixtures.MonkeyPatch("nova.virt.libvirt.driver.LibvirtDriver", LibvirtDriver)
        )
        # Nova's fixtures patch "nova.virt.libvirt.driver.LibvirtDriver.<name>",
        # which now lands on the drop-in class; their clean-up puts back what
        # getattr() gave them (a staticmethod unwrapped into a function). Put
        # the class back as it was after every test, before the next one.
        saved = dict(vars(LibvirtDriver))

        def restore():
            for name in set(vars(LibvirtDriver)) - set(saved):
                delattr(LibvirtDriver, name)
            for name, value in saved.items():
                if vars(LibvirtDriver).get(name) is not value:
                    setattr(LibvirtDriver, name, value)

        self.addCleanup(restore)
        # Nova's tests name disk paths that do not exist; without facts the
        # drop-in would keep Nova's settings and prove nothing. Each disk is
        # described as a fully allocated file, with O_DIRECT as Nova's own
        # probe answers (which these tests stub), so the policy decides and
        # renders for every disk Nova's tests build.
        self.useFixture(
            fixtures.MonkeyPatch("nova_disk_tuning.nova.disks.measure_local", _stand_in)
        )
        # And the drop-in must really tune: falling back to Nova's settings
        # (an exception in the tuning, a disk left unmeasured) fails the test.
        for logger in ("nova_disk_tuning.nova.driver.LOG", "nova_disk_tuning.nova.tune.LOG"):
            for level in ("exception", "warning"):
                self.useFixture(
                    fixtures.MockPatch(
                        f"{logger}.{level}",
                        side_effect=lambda msg, *a, **k: self.fail(f"drop-in fell back: {msg % a}"),
                    )
                )
        # fixtures.MonkeyPatch keeps a staticmethod static only when it finds
        # it in the patched class's own __dict__: give the drop-in class
        # Nova's, so the harness's autospec'd fakes bind as they do on Nova's.
        for name, value in vars(NovaLibvirtDriver).items():
            if isinstance(value, staticmethod | classmethod) and name not in saved:
                setattr(LibvirtDriver, name, value)

    def test_drivers_made_by_these_tests_are_the_drop_in(self):
        driver = test_driver.libvirt_driver.LibvirtDriver(fake.FakeVirtAPI(), True)
        self.assertIsInstance(driver, LibvirtDriver)


class DropInIOThreadPinningRegression(test_bug_2140537.TestIOThreadPinningPinnedCPU):
    """Nova's regression test for bug 2140537 (an ``<iothreadpin>`` without its IOThread)."""

    def setUp(self):
        self.flags(api_paste_config=harness.api_paste(), group="wsgi")
        super().setUp()

    def _setup_compute_service(self):
        self.flags(compute_driver="disk_tuning.LibvirtDriver")


def _selected(loader):
    """The named tests, with the variants ddt generates (``<name>_1_...``)."""
    wanted = [*NAMED, "test_drivers_made_by_these_tests_are_the_drop_in"]
    names = loader.getTestCaseNames(DropInLibvirtConnTestCase)
    for base in wanted:
        ddt_name = re.escape(base) + r"_\d+(_.*)?"
        variants = [n for n in names if n == base or re.fullmatch(ddt_name, n)]
        if not variants:
            raise LookupError(f"Nova has no test {base} any more: update NAMED")
        yield from variants


def load_tests(loader, standard_tests, pattern):
    suite = unittest.TestSuite()
    for name in _selected(loader):
        test = DropInLibvirtConnTestCase(name)
        reason = EXPECTED_FAILURES.get(name)
        if reason is not None:
            original = getattr(test, name)
            # testtools' form: a pass would be an unexpected success.
            setattr(test, name, functools.partial(test.expectFailure, reason, original))
        suite.addTest(test)
    suite.addTests(loader.loadTestsFromTestCase(DropInIOThreadPinningRegression))
    return suite
