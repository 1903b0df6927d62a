"""The drop-in's base-image records under Nova's own image cache manager, and its
image backends built without a driver, as Nova's image-backend tests build them.

Real files in a real ``_base``: Nova's ``manage_image_cache`` ages and removes
the bases; the records the project keeps beside them must follow, but never
the record of a base that exists or is being built. A second process holds
the entry's lock for the base being built, as a fetch in another nova-compute
worker would.
"""

import hashlib
import json
import os
import subprocess
import sys
import time

import fixtures
from nova import context as nova_context
from nova import test
from nova.conf import CONF
from nova.tests import fixtures as nova_fixtures
from nova.virt import fake

from nova_disk_tuning.conf import disk_tuning
from nova_disk_tuning.images.cache import ImageCache
from nova_disk_tuning.nova import imagebackend
from nova_disk_tuning.nova.driver import LibvirtDriver

MiB = 1 << 20
HOUR = 3600


def _digest(image_id: str) -> str:
    return hashlib.sha1(image_id.encode()).hexdigest()


class ImageCacheRecordsTest(test.TestCase):
    """With Nova's database: its manager asks it for the instances' block devices."""

    def setUp(self):
        super().setUp()
        self.useFixture(nova_fixtures.LibvirtFixture())
        self.instances = self.useFixture(fixtures.TempDir()).path
        self.flags(instances_path=self.instances)
        self.flags(remove_unused_original_minimum_age_seconds=HOUR, group="image_cache")
        self.driver = LibvirtDriver(fake.FakeVirtAPI(), False)
        self.base = os.path.join(self.instances, "_base")
        os.makedirs(self.base)

    def entry(self, image_id: str, age: float | None) -> str:
        """A cached base of ``age`` seconds with its record; no base when age is None."""
        path = os.path.join(self.base, _digest(image_id))
        with open(f"{path}.info", "w") as handle:
            json.dump({"image_id": image_id, "format": "raw", "virtual_size": MiB}, handle)
        if age is not None:
            with open(path, "wb") as handle:
                handle.write(os.urandom(MiB))
            os.utime(path, (time.time() - age, time.time() - age))
        return path

    def hold_entry_lock(self, path: str) -> subprocess.Popen:
        """Another process in the middle of building ``path`` (it holds the entry lock)."""
        code = (
            "import sys\n"
            "from nova_disk_tuning.common import locks\n"
            f"with locks.external_lock({'image-' + os.path.basename(path)!r}, "
            f"{os.path.join(self.instances, 'locks')!r}):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.read()\n"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdin.close)
        self.assertEqual("held", holder.stdout.readline().strip())  # the progress marker
        return holder

    def test_novas_manager_removes_aged_bases_and_the_drop_in_their_records(self):
        aged = self.entry("aged", age=2 * HOUR)
        young = self.entry("young", age=60)
        building = self.entry("building", age=None)
        self.hold_entry_lock(building)

        self.driver.manage_image_cache(nova_context.get_admin_context(), [])

        left = sorted(os.listdir(self.base))
        # Nova removed the aged base; its record went with it.
        self.assertFalse(os.path.exists(aged))
        self.assertNotIn(os.path.basename(aged) + ".info", left)
        # The young base stays, and so does its record.
        self.assertIn(os.path.basename(young), left)
        self.assertIn(os.path.basename(young) + ".info", left)
        # The base being built has its record already: it stays.
        self.assertIn(os.path.basename(building) + ".info", left)

    def test_an_orphan_record_goes_once_nobody_builds_its_base(self):
        orphan = self.entry("gone", age=None)
        self.driver.manage_image_cache(nova_context.get_admin_context(), [])
        self.assertEqual([], os.listdir(self.base))
        # The cache rebuilds from nothing: the removal left no half entry.
        self.assertIsNone(ImageCache(CONF)._reuse("gone", orphan, None))


class BackendWithoutDriverTest(test.NoDBTestCase):
    """Nova's image-backend tests and tools make backends with no driver constructed."""

    def setUp(self):
        super().setUp()
        group = disk_tuning.disk_tuning_group.name
        if group in CONF:
            # As in a process where no drop-in driver was ever made.
            CONF.reset()
            CONF.unregister_opts(disk_tuning.disk_tuning_opts, group=group)
        self.addCleanup(CONF.reset)
        self.instances = self.useFixture(fixtures.TempDir()).path
        self.flags(instances_path=self.instances, preallocate_images="space")

    def test_a_backend_reads_the_options_it_registers_itself(self):
        template = os.path.join(self.instances, "_base", "template")
        disk = os.path.join(self.instances, "uuid", "disk")
        os.makedirs(os.path.dirname(disk))

        def fetch(target, *args, **kwargs):
            with open(target, "wb") as handle:
                handle.truncate(4 * MiB)

        image = imagebackend.Flat(path=disk)

        def create_image(prepare_template, base, size, *args, **kwargs):
            prepare_template(*args, target=base, **kwargs)
            with open(disk, "wb") as handle:
                handle.truncate(size)

        image.create_image = create_image
        image.cache(fetch, os.path.basename(template), 8 * MiB)

        self.assertIn(disk_tuning.disk_tuning_group.name, CONF)
        # preallocate_images=space took effect: the disk is allocated whole.
        self.assertGreaterEqual(os.stat(disk).st_blocks * 512, 8 * MiB)
