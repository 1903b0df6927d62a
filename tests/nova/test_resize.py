"""Preallocated disks through a hard reboot and a same-host resize.

Nova's functional harness with the drop-in, disks made for real (see
``test_servers``); fakelibvirt is the hypervisor. A hard reboot preallocates
each disk again, which fills what a guest's discard punched. A resize copies
each disk's data, not its preallocation (``nova_disk_tuning.storage.copy``),
and ``finish_migration`` preallocates the copy.
"""

import os
import shutil
import subprocess
import tempfile
import unittest
from unittest import mock

import fixtures
from nova import context as nova_context
from nova import objects
from nova.virt.libvirt import config as vconfig

from nova_disk_tuning.nova import resize
from nova_disk_tuning.storage import preallocate as prealloc_mod
from nova_disk_tuning.storage.copy import sparse_copy_argv
from tests.nova.test_servers import DropInServersTest

GiB = 1 << 30


class PreallocatedDisksTest(DropInServersTest):
    MODE = {
        "DEFAULT": {"preallocate_images": "none"},
        "disk_tuning": {"preallocate_images": "performance"},
    }

    def setUp(self):
        super().setUp()
        self.fallocated = []
        real = prealloc_mod.falloc.fallocate

        def record(fd, mode, offset, length):
            self.fallocated.append(os.readlink(f"/proc/self/fd/{fd}"))
            return real(fd, mode, offset, length)

        self.useFixture(
            fixtures.MonkeyPatch("nova_disk_tuning.storage.preallocate.falloc.fallocate", record)
        )
        self.copies = []
        real_execute = resize.processutils.execute

        def execute(*argv, **kwargs):
            self.copies.append(argv)
            return real_execute(*argv, **kwargs)

        self.useFixture(
            fixtures.MonkeyPatch("nova_disk_tuning.nova.resize.processutils.execute", execute)
        )

    def disk_paths(self, root):
        return {dev: disk.find("source").get("file") for dev, disk in self.disks(root).items()}

    @staticmethod
    def allocated(path):
        return os.stat(path).st_blocks * 512


class TestHardReboot(PreallocatedDisksTest):
    def test_a_hard_reboot_fills_each_disk_again(self):
        # Nova's _create_images_and_backing calls each disk's cache() again:
        # the drop-in's fallocate runs and fills what a guest's discard
        # punched (tests/functional/storage/test_preallocate.py shows the
        # refill); on a whole disk it costs about a millisecond.
        driver = self.start(DEFAULT={"preallocate_images": "space"})
        server, root = self.boot()
        paths = self.disk_paths(root)
        self.assertGreaterEqual(self.allocated(paths["vda"]), GiB)
        self.fallocated.clear()
        self._reboot_server(server, hard=True)
        # What _hard_reboot does when the request carries a token (the
        # harness's carries none, so the API call above skips it).
        context = nova_context.get_admin_context()
        instance = objects.Instance.get_by_uuid(context, server["id"])
        config = vconfig.LibvirtConfigGuest()
        config.parse_str(self.defined[-1])
        disk_info = driver._get_instance_disk_info_from_config(config, None)
        driver._create_images_and_backing(context, instance, self.instance_dir(server), disk_info)
        backed = {info["path"] for info in disk_info if info["backing_file"]}
        self.assertIn(paths["vda"], backed)
        self.assertEqual(backed, set(self.fallocated) & backed)
        for path in backed:
            self.assertGreaterEqual(self.allocated(path), os.path.getsize(path))


class TestSameHostResize(PreallocatedDisksTest):
    def test_the_copy_is_sparse_and_the_copy_is_preallocated(self):
        self.flags(allow_resize_to_same_host=True)
        self.start(**self.MODE)
        server, root = self.boot(ephemeral=1)
        directory = self.instance_dir(server)
        before = self.disk_paths(root)
        # Something the guest wrote, which the copy must carry over.
        subprocess.run(
            ["qemu-io", "-c", "write -P 0x5a 1M 64k", before["vda"]],
            check=True,
            capture_output=True,
        )
        bigger = self._create_flavor(memory_mb=512, vcpu=2, disk=2, ephemeral=1, swap=128)
        server = self._resize_server(server, bigger)
        self.assertEqual("VERIFY_RESIZE", server["status"])
        resized = directory + "_resize"
        self.assertEqual(
            {
                tuple(sparse_copy_argv(os.path.join(resized, name), os.path.join(directory, name)))
                for name in ("disk", "disk.eph0", "disk.info")
            },
            {argv for argv in self.copies if argv[:3] == tuple(sparse_copy_argv("", ""))[:3]},
        )
        after = self.defined[-1]
        self.assertIn(before["vda"], after)
        # Preallocated again at the destination, to the new flavor's size.
        self.assertGreaterEqual(self.allocated(before["vda"]), 2 * GiB)
        self.assertGreaterEqual(self.allocated(os.path.join(directory, "disk.eph0")), GiB)
        # The same bytes as the source (the rest of the grown disk reads zeroes).
        subprocess.run(
            [
                "qemu-img",
                "compare",
                "-U",
                os.path.join(directory + "_resize", "disk"),
                before["vda"],
            ],
            check=True,
            capture_output=True,
        )
        self._confirm_resize(server)
        self.assertFalse(os.path.exists(directory + "_resize"))


class CopyRoutingTest(unittest.TestCase):
    """What reaches Nova's own copy_image: everything but a local copy in a resize."""

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.src = os.path.join(self.directory, "disk")
        with open(self.src, "wb") as handle:
            handle.write(b"data")
        patcher = mock.patch.object(resize, "_NOVA_COPY_IMAGE")
        self.nova = patcher.start()
        self.addCleanup(patcher.stop)

    def test_nova_copies_outside_a_resize_and_to_another_host(self):
        dest = os.path.join(self.directory, "copy")
        resize.copy_image(self.src, dest)
        with resize.sparse_copies():
            resize.copy_image(self.src, dest, host="192.0.2.20", compression=False)
        self.assertEqual(
            [
                mock.call(
                    self.src,
                    dest,
                    host=None,
                    receive=False,
                    on_execute=None,
                    on_completion=None,
                    compression=True,
                ),
                mock.call(
                    self.src,
                    dest,
                    host="192.0.2.20",
                    receive=False,
                    on_execute=None,
                    on_completion=None,
                    compression=False,
                ),
            ],
            self.nova.call_args_list,
        )

    def test_a_directory_or_an_existing_destination_stays_novas(self):
        ploop = os.path.join(self.directory, "ploop")
        os.mkdir(ploop)
        with resize.sparse_copies():
            resize.copy_image(ploop, os.path.join(self.directory, "ploop-copy"))
            resize.copy_image(self.src, self.src)
        self.assertEqual(2, self.nova.call_count)

    def test_a_local_copy_in_a_resize_is_the_projects(self):
        dest = os.path.join(self.directory, "copy")
        with resize.sparse_copies():
            resize.copy_image(self.src, dest)
        self.nova.assert_not_called()
        with open(dest, "rb") as handle:
            self.assertEqual(b"data", handle.read())

    def test_nova_finds_the_wrapper_where_it_calls_copy_image(self):
        from nova.virt.libvirt import utils as libvirt_utils

        import nova_disk_tuning.nova.driver  # noqa: F401  (installs it)

        self.assertIs(resize.copy_image, libvirt_utils.copy_image)
