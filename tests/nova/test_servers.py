"""Servers booted through Nova's API with the drop-in driver, disks made for real.

Nova's functional harness (``ServersTestBase``: API, conductor, scheduler,
placement and nova-compute in one process, fakelibvirt for the hypervisor)
with ``compute_driver = disk_tuning.LibvirtDriver``. The harness fakes disk
creation (``_create_image``, the image backend, ephemeral and swap); this
test puts Nova's real code back, so the drop-in's backends create real files
under the instances path from an image in the fake Glance, and the policy
decides from what it measures on them. fakelibvirt is the only stand-in: it
cannot run a guest (``tests/e2e`` boots real guests).

Each domain XML is captured where Nova defines it, checked attribute by
attribute and validated against libvirt's RelaxNG schema
(``virt-xml-validate``).
"""

import json
import os
import subprocess
import sys
import tempfile

import fixtures
from lxml import etree
from nova.conf import CONF
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional import integrated_helpers
from nova.tests.functional.api import client
from nova.tests.functional.libvirt import base
from nova.virt.libvirt import driver as nova_driver
from nova.virt.libvirt import host as nova_host
from nova.virt.libvirt import imagebackend as nova_backend
from nova.virt.libvirt import utils as libvirt_utils

from nova_disk_tuning.images.sample import build_sample_image
from nova_disk_tuning.nova import conf as nova_conf
from nova_disk_tuning.nova import disks as nova_disks
from tests.nova import harness

nova_conf.register_opts(CONF)

# Nova's real code, before the harness replaces it with fakes.
# (From the class __dict__: two of them are staticmethods, which getattr unwraps.)
REAL = {
    name: vars(nova_driver.LibvirtDriver)[name]
    for name in ("_create_image", "_create_ephemeral", "_create_swap")
}
REAL_BACKEND = nova_backend.Backend.backend
REAL_UTILS = {
    "fetch_image": libvirt_utils.fetch_image,
    "fetch_raw_image": libvirt_utils.fetch_raw_image,
}

_SAMPLE = {}


def sample_image():
    """The bytes of a small qcow2 with an ext4 file system (built once per process)."""
    if "data" not in _SAMPLE:
        with tempfile.TemporaryDirectory(prefix="ndt-nova-image-") as directory:
            path = build_sample_image(directory, size_mb=32, name="nova")
            with open(path, "rb") as handle:
                _SAMPLE["data"] = handle.read()
    return _SAMPLE["data"]


def _opens_with_o_direct(directory):
    """Whether a file in ``directory`` opens with O_DIRECT (asked of the kernel, not the plugin)."""
    path = os.path.join(directory, ".o_direct_check")
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(path)
    return True


def validate(xml):
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as handle:
        handle.write(xml)
        handle.flush()
        result = subprocess.run(
            ["virt-xml-validate", handle.name, "domain"], capture_output=True, text=True
        )
    return result.returncode, result.stdout + result.stderr


class DropInServersTest(base.ServersTestBase, integrated_helpers.InstanceHelperMixin):
    microversion = "latest"
    ADMIN_API = True
    ADDITIONAL_FILTERS = ["NUMATopologyFilter"]
    COMPUTE_DRIVER = "disk_tuning.LibvirtDriver"

    def setUp(self):
        # Set before the harness starts the API.
        self.flags(api_paste_config=harness.api_paste(), group="wsgi")
        super().setUp()
        for name, function in REAL.items():
            self.useFixture(
                fixtures.MonkeyPatch(f"nova.virt.libvirt.driver.LibvirtDriver.{name}", function)
            )
        self.useFixture(
            fixtures.MonkeyPatch("nova.virt.libvirt.imagebackend.Backend.backend", REAL_BACKEND)
        )
        for name, function in REAL_UTILS.items():
            self.useFixture(fixtures.MonkeyPatch(f"nova.virt.libvirt.utils.{name}", function))
        # Nova's privileged helpers (utime of a base, mkfs of the ephemeral
        # disk, mkswap) run in this process instead of a privsep daemon; the
        # tests run as root, as nova-compute's privsep daemon does.
        self.useFixture(nova_fixtures.PrivsepFixture())
        self.defined = []
        real_write = nova_host.Host.write_instance_config

        def capture(host, xml):
            self.defined.append(xml)
            return real_write(host, xml)

        self.useFixture(
            fixtures.MonkeyPatch("nova.virt.libvirt.host.Host.write_instance_config", capture)
        )
        data = sample_image()
        self.image_id = "a4b3a8f8-7c1c-4b6e-9f3e-3c2d0c9b1e01"
        harness.upload_image(self.glance, self.image_id, data, "qcow2")

    def _setup_compute_service(self):
        self.flags(compute_driver=self.COMPUTE_DRIVER)
        # The ephemeral disk gets a real file system: ext4, as on a Linux
        # host (Nova's default without an image os_type is vfat).
        self.flags(default_ephemeral_format="ext4")

    # -- helpers -----------------------------------------------------------------

    def boot(self, extra_spec=None, vcpu=2, ephemeral=1, swap=128, image_id=None):
        flavor = self._create_flavor(
            memory_mb=512,
            vcpu=vcpu,
            disk=1,
            ephemeral=ephemeral,
            swap=swap,
            extra_spec=extra_spec,
        )
        server = self._create_server(
            image_uuid=image_id or self.image_id, flavor_id=flavor, networks="none"
        )
        self.assertTrue(self.defined, "Nova defined no domain")
        xml = self.defined[-1]
        code, output = validate(xml)
        self.assertEqual(0, code, f"libvirt's schema refuses the XML: {output}\n{xml}")
        return server, etree.fromstring(xml.encode())

    def audit(self, root):
        """``nova-disk-tuning audit`` of the defined XML, run as an operator would."""
        directory = self.useFixture(fixtures.TempDir()).path
        xml_file = os.path.join(directory, "domain.xml")
        with open(xml_file, "wb") as handle:
            handle.write(etree.tostring(root))
        conf_file = os.path.join(directory, "nova.conf")
        with open(conf_file, "w") as handle:
            handle.write(
                f"[DEFAULT]\ninstances_path = {CONF.instances_path}\n"
                "[libvirt]\nconnection_uri = test:///default\n"
            )
        command = os.path.join(sys.prefix, "bin", "nova-disk-tuning")
        result = subprocess.run(
            [command, "--config-file", conf_file, "audit", "--json", xml_file],
            capture_output=True,
            text=True,
        )
        return result.returncode, result.stdout, result.stderr

    def disks(self, root):
        return {d.find("target").get("dev"): d for d in root.iterfind("devices/disk")}

    def instance_dir(self, server):
        return os.path.join(CONF.instances_path, server["id"])

    def start(self, **flags):
        for group, values in flags.items():
            for name, value in values.items():
                self.flags(**{name: value}, group=None if group == "DEFAULT" else group)
        self.start_compute()
        driver = self.computes["compute1"].driver
        self.assertEqual("LibvirtDriver", type(driver).__name__)
        return driver


class TestEmptyImage(DropInServersTest):
    """A raw image of 0 bytes in Glance: Nova boots it (the disk is grown to the flavor)."""

    def test_a_server_boots_from_an_empty_raw_image(self):
        empty = "e0e0e0e0-0000-4000-8000-000000000000"
        harness.upload_image(self.glance, empty, b"", "raw")
        self.start(DEFAULT={"preallocate_images": "space", "use_cow_images": False})
        server, root = self.boot(image_id=empty, ephemeral=0, swap=0)
        self.assertEqual("ACTIVE", server["status"])
        path = self.disks(root)["vda"].find("source").get("file")
        self.assertEqual(1 << 30, os.path.getsize(path))
        with open(path, "rb") as handle:
            self.assertEqual(bytes(4096), handle.read(4096))


class TestDropInDisks(DropInServersTest):
    """Root, ephemeral and swap of one server, per preallocation mode and image type."""

    def check_disks(self, server, root, io):
        disks = self.disks(root)
        self.assertEqual({"vda", "vdb", "vdc"}, set(disks))
        directory = self.instance_dir(server)
        for name, disk in disks.items():
            driver = disk.find("driver")
            path = disk.find("source").get("file")
            self.assertTrue(path.startswith(directory), path)
            self.assertTrue(os.path.isfile(path), f"{name}: {path} was not created")
            # The host directory takes O_DIRECT: a direct cache, flushed.
            self.assertEqual("none", driver.get("cache"), name)
            self.assertEqual(io, driver.get("io"), name)
            # Rendered beyond what Nova's config objects can render.
            self.assertEqual("1", driver.get("iothread"), name)
            self.assertEqual("2", driver.get("queues"), name)
        self.assertEqual("1", root.findtext("iothreads"))
        return disks

    def allocated(self, path):
        st = os.stat(path)
        return st.st_blocks * 512

    def test_none_qcow2_sparse_overlays_get_io_uring(self):
        self.start(DEFAULT={"preallocate_images": "none"})
        server, root = self.boot()
        disks = self.check_disks(server, root, io="io_uring")
        path = disks["vda"].find("source").get("file")
        self.assertLess(self.allocated(path), 64 << 20, "a none-mode overlay is sparse")

    def test_space_qcow2_fallocated_overlays_get_native(self):
        self.start(DEFAULT={"preallocate_images": "space"})
        server, root = self.boot()
        disks = self.check_disks(server, root, io="native")
        path = disks["vda"].find("source").get("file")
        self.assertGreaterEqual(self.allocated(path), 1 << 30)
        # The project's own audit finds nothing to improve in what Nova defined.
        code, out, err = self.audit(root)
        self.assertEqual(0, code, out + err)

    def test_performance_overlay_has_extended_l2(self):
        self.start(
            DEFAULT={"preallocate_images": "none"},
            disk_tuning={"preallocate_images": "performance"},
        )
        server, root = self.boot()
        disks = self.check_disks(server, root, io="native")
        path = disks["vda"].find("source").get("file")
        info = subprocess.run(
            ["qemu-img", "info", "--force-share", "--output=json", path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.assertIn('"extended-l2": true', info)
        self.assertIn('"backing-filename-format": "raw"', info)

    def test_instances_path_on_tmpfs(self):
        # tmpfs took O_DIRECT only from Linux 6.6 (trivial direct I/O): before,
        # cache none (and so native AIO) cannot open there. The drop-in must
        # follow what the mount does; the test asks the mount itself. The
        # base image, the overlays and the probes all live on it.
        if os.geteuid() != 0:
            self.skipTest("mounting tmpfs needs root")
        mountpoint = self.useFixture(fixtures.TempDir(rootdir="/var/tmp")).path
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3g", "tmpfs", mountpoint], capture_output=True
        )
        if mounted.returncode != 0:
            self.skipTest(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", mountpoint], check=True)
        direct = _opens_with_o_direct(mountpoint)
        self.start(DEFAULT={"preallocate_images": "space", "instances_path": mountpoint})
        _server, root = self.boot()
        wanted = ("none", "native", "1") if direct else ("writeback", "threads", "1")
        for name, disk in self.disks(root).items():
            driver = disk.find("driver")
            self.assertTrue(disk.find("source").get("file").startswith(mountpoint), name)
            self.assertEqual(
                wanted, (driver.get("cache"), driver.get("io"), driver.get("iothread")), name
            )
        path = self.disks(root)["vda"].find("source").get("file")
        self.assertGreaterEqual(self.allocated(path), 1 << 30, "space preallocates on tmpfs too")

    def test_flat_images_type_raw_copies(self):
        self.start(DEFAULT={"preallocate_images": "space"}, libvirt={"images_type": "raw"})
        server, root = self.boot()
        disks = self.check_disks(server, root, io="native")
        for disk in disks.values():
            self.assertEqual("raw", disk.find("driver").get("type"))


class TestDropInDegrades(DropInServersTest):
    """What cannot be measured, or a failure in the tuning, never fails a boot."""

    def test_a_disk_that_cannot_be_measured_keeps_novas_settings(self):
        real = nova_disks.measure_local

        def failing(path, **kwargs):
            if kwargs["name"] == "vdb":
                raise OSError(5, "Input/output error", path)
            return real(path, **kwargs)

        self.useFixture(fixtures.MonkeyPatch("nova_disk_tuning.nova.disks.measure_local", failing))
        self.start(DEFAULT={"preallocate_images": "space"})
        logs = self.useFixture(fixtures.FakeLogger(name="nova_disk_tuning.nova.tune"))
        _, root = self.boot()
        disks = self.disks(root)
        self.assertEqual("1", disks["vda"].find("driver").get("iothread"))
        vdb = disks["vdb"].find("driver")
        # Nova's own choice for a space-preallocated file: native, no IOThread.
        self.assertEqual(
            ("none", "native", None), (vdb.get("cache"), vdb.get("io"), vdb.get("iothread"))
        )
        self.assertIn("Disk vdb keeps Nova's settings", logs.output)
        self.assertIn("Input/output error", logs.output)

    def test_a_failing_policy_leaves_novas_xml(self):
        def broken(*args, **kwargs):
            raise RuntimeError("policy bug")

        self.useFixture(fixtures.MonkeyPatch("nova_disk_tuning.nova.tune.tune_guest", broken))
        self.start()
        logs = self.useFixture(fixtures.FakeLogger(name="nova_disk_tuning.nova.driver"))
        _, root = self.boot()
        self.assertEqual("1", root.findtext("iothreads"))
        for disk in self.disks(root).values():
            self.assertIsNone(disk.find("driver").get("iothread"))
        self.assertIn("Disk tuning failed", logs.output)
        self.assertIn("policy bug", logs.output)


class TestDropInIOThreads(DropInServersTest):
    def test_extra_spec_spreads_disks_over_iothreads(self):
        self.start()
        _server, root = self.boot(extra_spec={"hw:disk_iothreads": "3"})
        self.assertEqual("3", root.findtext("iothreads"))
        threads = {n: d.find("driver").get("iothread") for n, d in self.disks(root).items()}
        self.assertEqual({"vda": "1", "vdb": "2", "vdc": "3"}, threads)

    def test_extra_spec_zero_means_no_iothreads(self):
        self.start()
        _server, root = self.boot(extra_spec={"hw:disk_iothreads": "0"})
        self.assertIsNone(root.find("iothreads"))
        for disk in self.disks(root).values():
            self.assertIsNone(disk.find("driver").get("iothread"))

    def test_api_refuses_a_bad_extra_spec(self):
        self.start()
        flavor = self._create_flavor(memory_mb=512, vcpu=1, disk=1)
        error = self.assertRaises(
            client.OpenStackApiException,
            self.api.post_extra_spec,
            flavor,
            {"extra_specs": {"hw:disk_iothreads": "many"}},
        )
        self.assertEqual(400, error.response.status_code)

    def test_dedicated_cpus_pin_every_iothread(self):
        self.flags(cpu_shared_set="0,1", cpu_dedicated_set="2-7", group="compute")
        self.start()
        _server, root = self.boot(
            extra_spec={"hw:cpu_policy": "dedicated", "hw:disk_iothreads": "2"}
        )
        self.assertEqual("2", root.findtext("iothreads"))
        pins = root.findall("cputune/iothreadpin")
        self.assertEqual(["1", "2"], [p.get("iothread") for p in pins])
        emulator = root.find("cputune/emulatorpin").get("cpuset")
        self.assertEqual({emulator}, {p.get("cpuset") for p in pins})


class TestNovaAlone(DropInServersTest):
    """The same server under Nova's own driver: the baseline the drop-in changes."""

    COMPUTE_DRIVER = "libvirt.LibvirtDriver"

    def test_nova_binds_no_disk_to_its_iothread(self):
        self.start(DEFAULT={"preallocate_images": "space"})
        _server, root = self.boot()
        self.assertEqual("1", root.findtext("iothreads"))
        for disk in self.disks(root).values():
            driver = disk.find("driver")
            self.assertIsNone(driver.get("iothread"))
            self.assertIsNone(driver.get("queues"))
        # ...which the audit reports: an IOThread no disk is bound to.
        code, out, err = self.audit(root)
        self.assertEqual(3, code, out + err)
        rules = {f["rule"] for f in json.loads(out)["findings"]}
        self.assertIn("idle-iothreads", rules, out)
