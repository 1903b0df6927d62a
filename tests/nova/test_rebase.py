"""Unshelve of a qcow2 instance with the drop-in's image backends, real files end to end.

An unshelved (or cross-cell resized) instance is spawned from a snapshot
image; Nova then rebases its root disk onto the instance's original image
(``_rebase_original_qcow2_image``), so the disk no longer depends on the
snapshot, which is deleted after the unshelve. This runs Nova's own
``_create_and_inject_local_root`` with the drop-in's backends and fetch, on
real qcow2 and raw files: the images are in Nova's fake Glance, the only
stand-in (no image service runs here).
"""

import hashlib
import json
import os
import subprocess

import fixtures
from nova import context as nova_context
from nova import objects, test
from nova.compute import vm_states
from nova.tests import fixtures as nova_fixtures
from nova.tests.unit import fake_instance
from nova.virt import fake

from nova_disk_tuning.nova.driver import LibvirtDriver
from tests.nova import harness

MiB = 1 << 20
ORIGINAL = "0f0f0f0f-0000-4000-8000-00000000000a"
SNAPSHOT = "5a5a5a5a-0000-4000-8000-00000000000b"


def _qemu_img(*args):
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


def _image(directory, name, pattern, first=None):
    """A qcow2 of 8 MiB filled with ``pattern``, its first MiB ``first`` if given."""
    raw = os.path.join(directory, f"{name}.raw")
    with open(raw, "wb") as handle:
        handle.write((first or pattern) * MiB + pattern * (7 * MiB))
    path = os.path.join(directory, f"{name}.qcow2")
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, path)
    with open(path, "rb") as handle:
        return handle.read(), raw


class UnshelveRebaseTest(test.NoDBTestCase):
    def setUp(self):
        super().setUp()
        self.useFixture(nova_fixtures.LibvirtFixture())
        self.useFixture(nova_fixtures.PrivsepFixture())
        self.glance = self.useFixture(nova_fixtures.GlanceFixture(self))
        self.instances = self.useFixture(fixtures.TempDir(rootdir="/var/tmp")).path
        self.flags(instances_path=self.instances)
        self.flags(images_type="qcow2", group="libvirt")
        scratch = self.useFixture(fixtures.TempDir()).path
        original, _ = _image(scratch, "original", b"O")
        snapshot, self.snapshot_raw = _image(scratch, "snapshot", b"O", first=b"S")
        harness.upload_image(self.glance, ORIGINAL, original, "qcow2")
        harness.upload_image(self.glance, SNAPSHOT, snapshot, "qcow2")
        self.driver = LibvirtDriver(fake.FakeVirtAPI(), False)
        self.context = nova_context.get_admin_context()

    def unshelve(self):
        instance = fake_instance.fake_instance_obj(
            self.context,
            image_ref=SNAPSHOT,
            vm_state=vm_states.SHELVED_OFFLOADED,
            root_gb=1,
            ephemeral_gb=0,
            flavor=objects.Flavor(root_gb=1, ephemeral_gb=0, swap=0, memory_mb=512, vcpus=1),
        )
        instance.system_metadata = {"image_base_image_ref": ORIGINAL}
        instance.trusted_certs = None
        mapping = {"disk": {"bus": "virtio", "dev": "vda", "type": "disk", "boot_index": "1"}}
        self.driver._create_and_inject_local_root(
            self.context,
            instance,
            mapping,
            False,
            "",
            {"image_id": SNAPSHOT},
            None,
            None,
        )
        return os.path.join(self.instances, instance.uuid, "disk")

    def test_the_root_disk_ends_on_the_original_image_with_the_snapshots_data(self):
        disk = self.unshelve()
        info = json.loads(_qemu_img("info", "--output=json", "-U", disk))
        original_base = os.path.join(
            self.instances, "_base", hashlib.sha1(ORIGINAL.encode()).hexdigest()
        )
        self.assertEqual(original_base, info["full-backing-filename"])
        # The guest sees the snapshot: its first MiB, rebased, stays in the overlay.
        self.assertEqual(
            0, subprocess.run(["qemu-img", "compare", disk, self.snapshot_raw]).returncode
        )
