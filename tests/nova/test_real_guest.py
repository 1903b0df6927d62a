"""A real guest booted through Nova with the drop-in, on a real libvirtd and QEMU.

Nova's API, conductor, scheduler, placement and nova-compute run in this
process (Nova's functional harness) with ``compute_driver =
disk_tuning.LibvirtDriver``; unlike ``test_servers.py`` there is no
fakelibvirt: nova-compute talks to a private libvirtd with the QEMU driver
(``nova_disk_tuning_bench.guest.daemon``), QEMU runs the guest under TCG.
The image in Nova's fake Glance is the project's test guest (Debian's kernel
and a busybox initramfs, ``nova_disk_tuning_bench.guest.kit``), booted the
way Nova boots AMI-style images: ``kernel_id``/``ramdisk_id`` images and the
``os_command_line`` property. The guest writes a pattern to each of its disks
with O_DIRECT, reads it back, and reports on its serial console, which Nova
logs to ``console.log`` in the instance directory.

What is replaced, and why:

* Glance, Neutron, Cinder and Keystone are Nova's fakes (no such services on
  one machine; the server has no network);
* Nova's privileged helpers run in this process, as root, instead of a
  privsep daemon started through rootwrap (``PrivsepFixture``);
* libvirt's event thread is off (Nova's harness forbids it in tests); Nova
  polls the domain's state instead;
* the host's network interfaces are not read (the harness forbids it).
"""

import os
import time

import fixtures
from lxml import etree
from nova.conf import CONF
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional import integrated_helpers
from nova_disk_tuning_bench.guest import console, domains, stacks
from nova_disk_tuning_bench.guest.daemon import private_libvirtd
from nova_disk_tuning_bench.guest.kit import build_guest_kit

from nova_disk_tuning.nova import conf as nova_conf
from tests.nova import harness

nova_conf.register_opts(CONF)

# The host really is the hypervisor here: its architecture and kernel are
# read for real (the harness replaces os.uname with a trap in setUp).
REAL_UNAME = os.uname

MiB = 1 << 20
KERNEL_ID = "5a0e7c1e-0000-4000-8000-00000000a001"
RAMDISK_ID = "5a0e7c1e-0000-4000-8000-00000000a002"
ROOT_ID = "5a0e7c1e-0000-4000-8000-00000000a003"


class RealGuestThroughNovaTest(
    integrated_helpers._IntegratedTestBase, integrated_helpers.InstanceHelperMixin
):
    microversion = "latest"
    ADMIN_API = True

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("a private libvirtd with the QEMU driver needs root")
        self.kit = build_guest_kit()
        # Started first, so it stops last (after nova-compute).
        daemon = private_libvirtd(base_dir="/var/tmp")
        self.daemon = daemon.__enter__()
        self.addCleanup(daemon.__exit__, None, None, None)
        # On the stack this run names (NDT_STACK, make e2e-next), or it fails.
        versions, marker = self.daemon.versions(), stacks.current().installed() or {}
        for key in ("libvirt", "qemu"):
            if key in marker:
                self.assertEqual(versions[key], marker[key], f"stack {marker['name']}: {key}")
        self.flags(api_paste_config=harness.api_paste(), group="wsgi")
        self.instances = self.useFixture(fixtures.TempDir(rootdir="/var/tmp")).path
        self.flags(instances_path=self.instances)
        self.useFixture(fixtures.MockPatch("nova.virt.libvirt.host.Host._init_events"))
        # The harness forbids reading the host's interfaces (my_ip checks).
        self.useFixture(fixtures.MockPatch("nova.compute.utils.get_machine_ips", return_value=[]))
        self.useFixture(nova_fixtures.PrivsepFixture())
        super().setUp()
        self.useFixture(fixtures.MonkeyPatch("os.uname", REAL_UNAME))

    COMPUTE_DRIVER = "disk_tuning.LibvirtDriver"

    def _setup_compute_service(self):
        self.flags(connection_uri=self.daemon.uri, virt_type="qemu", group="libvirt")
        self.flags(compute_driver=self.COMPUTE_DRIVER)
        self.flags(default_ephemeral_format="ext4")
        self.flags(preallocate_images="performance", group="disk_tuning")
        self.flags(iothreads=2, group="disk_tuning")
        return self._start_compute("compute")

    def _upload(self, image_id, path_or_bytes, disk_format, properties=None):
        data = path_or_bytes
        if not isinstance(data, bytes):
            with open(path_or_bytes, "rb") as handle:
                data = handle.read()
        harness.upload_image(self.glance, image_id, data, disk_format, properties)

    def boot_and_wait(self):
        """Boot the kit through Nova's API; the domain XML, the QEMU argv and the report."""
        self._upload(KERNEL_ID, self.kit.kernel, "aki")
        self._upload(RAMDISK_ID, self.kit.initrd, "ari")
        # The root image is a small raw disk: the guest runs from its
        # initramfs and only writes and reads its disks.
        cmdline = console.guest_cmdline(disks=["vda", "vdb"], timeout=120)
        self._upload(
            ROOT_ID,
            bytes(16 * MiB),
            "raw",
            {"kernel_id": KERNEL_ID, "ramdisk_id": RAMDISK_ID, "os_command_line": cmdline},
        )
        flavor = self._create_flavor(memory_mb=512, vcpu=2, disk=1, ephemeral=1)
        server = self._create_server(image_uuid=ROOT_ID, flavor_id=flavor, networks="none")
        conn = self.computes["compute"].driver._host.get_connection()
        domain = conn.lookupByUUIDString(server["id"])
        xml = domain.XMLDesc(0)
        log = os.path.join(self.instances, server["id"], "console.log")
        # Progress marker: the guest prints NDT-DONE, then powers itself off.
        report = console.GuestReport()
        deadline = time.monotonic() + 600
        while not report.done and time.monotonic() < deadline:
            if os.path.exists(log):
                with open(log, errors="replace") as handle:
                    report = console.parse_console(handle.read())
            time.sleep(0.5)
        self.assertTrue(report.done, f"the guest did not finish: {report}")
        argv = domains.qemu_cmdline_from_log(self.daemon.qemu_log(domain.name()))
        save = os.environ.get("NDT_SAVE_NOVA_XML")
        if save:
            with open(os.path.join(save, f"{self.COMPUTE_DRIVER}.xml"), "w") as handle:
                handle.write(xml)
        return server, etree.fromstring(xml.encode()), argv, report

    def test_guest_writes_its_disks(self):
        _, root, argv, report = self.boot_and_wait()
        self.assertEqual({"vda": "ok", "vdb": "ok"}, report.results)
        self.assertEqual("2", root.findtext("iothreads"))
        for disk in root.iterfind("devices/disk"):
            name = disk.find("target").get("dev")
            driver = disk.find("driver")
            path = disk.find("source").get("file")
            # performance: qcow2 overlays preallocated, so native AIO is safe.
            self.assertEqual(
                {"cache": "none", "io": "native", "type": "qcow2", "queues": "2"},
                {k: driver.get(k) for k in ("cache", "io", "type", "queues")},
                name,
            )
            # What QEMU was really given.
            args = domains.disk_by_source(argv, path)
            self.assertEqual(("native", True), (args.aio, args.cache_direct), name)
            # One IOThread per disk, or (libvirt >= 10.0 with QEMU >= 9.0) the disk's
            # queues mapped over IOThreads: QEMU got the same as the XML says.
            threads = _disk_iothreads(driver)
            if driver.get("iothread") is not None:
                self.assertEqual([f"iothread{t}" for t in threads], [args.iothread], name)
            else:
                mapping = args.device.raw.get("iothread-vq-mapping") or []
                self.assertEqual(
                    sorted(f"iothread{t}" for t in threads),
                    sorted(e["iothread"] for e in mapping),
                    name,
                )
            # What the guest wrote is in the disk, seen through QEMU's block layer.
            data = domains.read_image(path, "qcow2", console.PATTERN_OFFSET, MiB)
            self.assertEqual(console.expected_pattern(name), data, name)
        used = {
            d.find("target").get("dev"): _disk_iothreads(d.find("driver"))
            for d in root.iterfind("devices/disk")
        }
        # Both IOThreads carry disk I/O, either way.
        self.assertEqual({"1", "2"}, set().union(*used.values()), used)


def _disk_iothreads(driver) -> list[str]:
    """The IOThread ids a disk's ``<driver>`` uses (attribute, or per-queue mapping)."""
    if driver.get("iothread") is not None:
        return [driver.get("iothread")]
    return [t.get("id") for t in driver.iterfind("iothreads/iothread")]


class NovaAloneRealGuestTest(RealGuestThroughNovaTest):
    """The same server under Nova's own driver: the baseline the drop-in changes."""

    COMPUTE_DRIVER = "libvirt.LibvirtDriver"

    def test_guest_writes_its_disks(self):
        _, root, argv, report = self.boot_and_wait()
        self.assertEqual({"vda": "ok", "vdb": "ok"}, report.results)
        self.assertEqual("1", root.findtext("iothreads"))
        for disk in root.iterfind("devices/disk"):
            path = disk.find("source").get("file")
            self.assertIsNone(disk.find("driver").get("iothread"))
            self.assertIsNone(domains.disk_by_source(argv, path).iothread)
