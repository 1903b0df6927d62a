"""What the drop-in takes over from Nova's image fetch, and a volume's discard request."""

import hashlib
import os
import subprocess
import types
from unittest import mock

import fixtures
from nova import exception as nova_exception
from nova import test
from nova.conf import CONF

from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.nova import disks as nova_disks
from nova_disk_tuning.nova import fetch
from nova_disk_tuning.storage.probe import StorageProbe


class FetchRoutingTest(test.NoDBTestCase):
    def setUp(self):
        super().setUp()
        self.instances = self.useFixture(fixtures.TempDir()).path
        self.flags(instances_path=self.instances)
        self.nova_fetch = self.useFixture(
            fixtures.MockPatch("nova.virt.libvirt.utils.fetch_image")
        ).mock
        # Nova's name for image "abc" in its cache: sha1 of the id.
        self.target = os.path.join(self.instances, "_base", hashlib.sha1(b"abc").hexdigest())

    def _fetch(self, disk_format):
        with mock.patch.object(
            fetch.nova_images, "get_info", return_value={"disk_format": disk_format}
        ):
            fetch.fetch_image(None, self.target, "abc")

    def test_formats_outside_the_pipeline_stay_novas(self):
        for disk_format in ("iso", "ami", "vhd", "vmdk", "vdi", "ploop"):
            self.nova_fetch.reset_mock()
            self._fetch(disk_format)
            self.nova_fetch.assert_called_once_with(None, self.target, "abc", None)

    def test_disabled_deep_inspection_stays_novas(self):
        self.flags(disable_deep_image_inspection=True, group="workarounds")
        self._fetch("qcow2")
        self.nova_fetch.assert_called_once()

    def test_an_unacceptable_image_is_novas_exception(self):
        # The download writes an empty file: refused by the project's checks.
        def download(context, image_id, path, trusted_certs=None):
            open(path, "wb").close()

        with mock.patch.object(fetch.nova_images, "fetch", side_effect=download):
            self.assertRaises(nova_exception.ImageUnacceptable, self._fetch, "qcow2")
        self.nova_fetch.assert_not_called()
        # Nothing half-made is left in the cache (the entry's lock file aside).
        leftovers = [n for n in os.listdir(os.path.dirname(self.target)) if "lock" not in n]
        self.assertEqual([], leftovers)

    def test_a_virtual_size_above_the_ceiling_is_refused_inside_nova(self):
        # A small qcow2 claiming 2 EiB: refused before qemu-img walks it.
        def download(context, image_id, path, trusted_certs=None):
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", path, "2E"],
                check=True,
            )

        with mock.patch.object(fetch.nova_images, "fetch", side_effect=download):
            caught = self.assertRaises(nova_exception.ImageUnacceptable, self._fetch, "qcow2")
        self.assertIn("max_image_virtual_size_gb", str(caught))
        self.nova_fetch.assert_not_called()


class VolumeFactsTest(test.NoDBTestCase):
    def test_cinder_discard_request_reaches_the_facts(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, "volume")
        with open(path, "wb") as handle:
            handle.truncate(1 << 20)
        disk = types.SimpleNamespace(
            target_dev="vdb",
            target_bus="virtio",
            source_type="file",
            source_path=path,
            source_device="disk",
            driver_format="raw",
            shareable=False,
        )
        results = {}
        for requested in (True, False, None):
            info = {"driver_volume_type": "nfs", "data": {"discard": requested}}
            measured, skipped = nova_disks.measure(
                [disk],
                {"vdb": info},
                StorageProbe(),
                QemuImg(CONF),
            )
            self.assertEqual([], skipped)
            results[requested] = measured[0].discard
        self.assertEqual({True: "unmap", False: None, None: None}, results)
