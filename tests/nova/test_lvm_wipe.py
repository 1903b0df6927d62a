"""``volume_clear = zero`` of the drop-in's LVM clean-up, on a real block device.

A loop device holding random data stands in for the instance's logical
volume: this machine has no device-mapper, so ``lvcreate`` cannot make one
and ``lvremove`` is recorded instead of run (both say so below). The wipe
itself is real: Nova's privsep entrypoint runs in this process (as root, as
Nova's privsep daemon does) and the device reads back as zeroes.
"""

import os
import subprocess
from unittest import mock

import fixtures
from nova import test
from nova.tests import fixtures as nova_fixtures
from nova.virt import fake

from nova_disk_tuning.nova.driver import LibvirtDriver

MiB = 1 << 20


class LvmWipeTest(test.NoDBTestCase):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("loop devices need root")
        self.useFixture(nova_fixtures.LibvirtFixture())
        self.useFixture(nova_fixtures.PrivsepFixture())
        backing = os.path.join(self.useFixture(fixtures.TempDir(rootdir="/var/tmp")).path, "lv")
        with open(backing, "wb") as handle:
            handle.write(os.urandom(8 * MiB))
        self.device = subprocess.run(
            ["losetup", "--find", "--show", backing],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.addCleanup(subprocess.run, ["losetup", "-d", self.device])
        self.driver = LibvirtDriver(fake.FakeVirtAPI(), False)
        self.instance = {"uuid": "u1", "ephemeral_key_uuid": None}
        # Stand-ins for what needs device-mapper: the instance's LV list, lvremove.
        self.lvm_disks = self.useFixture(
            fixtures.MockPatchObject(LibvirtDriver, "_lvm_disks", return_value=[self.device])
        ).mock
        self.lvremove = self.useFixture(fixtures.MockPatch("nova.privsep.fs.lvremove")).mock

    def read(self, length):
        with open(self.device, "rb") as handle:
            return handle.read(length)

    def test_zero_wipes_the_device_in_place(self):
        self.flags(volume_clear="zero", volume_clear_size=0, group="libvirt")
        with mock.patch("nova.privsep.fs.clear") as shred:
            self.driver._cleanup_lvm(self.instance, None)
        shred.assert_not_called()
        self.assertEqual(bytes(8 * MiB), self.read(8 * MiB))
        self.lvremove.assert_called_once_with(self.device)

    def test_clear_size_limits_the_wipe(self):
        self.flags(volume_clear="zero", volume_clear_size=2, group="libvirt")
        before = self.read(8 * MiB)
        self.driver._cleanup_lvm(self.instance, None)
        after = self.read(8 * MiB)
        self.assertEqual(bytes(2 * MiB), after[: 2 * MiB])
        self.assertEqual(before[2 * MiB :], after[2 * MiB :])

    def test_shred_stays_novas(self):
        self.flags(volume_clear="shred", group="libvirt")
        with mock.patch("nova.virt.libvirt.storage.lvm.remove_volumes") as remove:
            self.driver._cleanup_lvm(self.instance, None)
        remove.assert_called_once_with([self.device])

    def test_an_inactive_volume_is_removed_without_a_wipe(self):
        """Listed by lvs but without a device node: Nova removes it, and so does the drop-in."""
        self.flags(volume_clear="zero", volume_clear_size=0, group="libvirt")
        inactive = "/dev/nova-vg/u1_disk.eph0"  # no such device node on this host
        self.lvm_disks.return_value = [inactive, self.device]
        self.driver._cleanup_lvm(self.instance, None)
        self.assertEqual(
            [mock.call(inactive), mock.call(self.device)], self.lvremove.call_args_list
        )
        self.assertEqual(bytes(8 * MiB), self.read(8 * MiB))  # the active one is wiped
