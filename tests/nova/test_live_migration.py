"""A live migration keeps each volume's ``<driver>``: its tuning and its IOThread.

Nova's own ``_live_migration_operation`` runs, with its real
``get_updated_guest_xml``, which rebuilds every volume's XML from the
destination's connection_info. The XML it hands to libvirt's migrate call is
captured from the source domain, a stand-in: fakelibvirt cannot migrate a
guest, and no second host runs here.
"""

from unittest import mock

from lxml import etree
from nova import context as nova_context
from nova import objects, test
from nova.tests import fixtures as nova_fixtures
from nova.tests.unit import fake_instance
from nova.virt import fake
from nova.virt.libvirt import driver as nova_driver
from nova.virt.libvirt import guest as libvirt_guest

from nova_disk_tuning.nova.driver import LibvirtDriver

VOLUME = "58a84f6d-3f0c-4e19-a0af-eb657b790657"
SOURCE_PATH = "/dev/disk/by-path/ip-192.0.2.10:3260-iqn.2010-10.org.openstack:source-lun-1"
DEST_PATH = "/dev/disk/by-path/ip-192.0.2.20:3260-iqn.2010-10.org.openstack:dest-lun-1"

# The running domain as the drop-in defines it: the volume tuned and bound to IOThread 2.
RUNNING = f"""<domain type='kvm'>
  <name>instance-00000001</name>
  <uuid>b38a3f43-4be2-4046-897f-b67c2f5e0147</uuid>
  <memory>524288</memory>
  <vcpu>2</vcpu>
  <iothreads>2</iothreads>
  <os><type>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='io_uring' iothread='1' queues='2'/>
      <source file='/var/lib/nova/instances/b38a3f43/disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native' discard='unmap'
              detect_zeroes='unmap' iothread='2' queues='2'/>
      <source dev='{SOURCE_PATH}'/>
      <target dev='vdb' bus='virtio'/>
      <serial>{VOLUME}</serial>
    </disk>
  </devices>
</domain>"""


def _connection_info(path):
    return {
        "driver_volume_type": "iscsi",
        "serial": VOLUME,
        "data": {
            "access_mode": "rw",
            "target_discovered": False,
            "target_iqn": "iqn.2010-10.org.openstack:dest-lun-1",
            "volume_id": VOLUME,
            "device_path": path,
        },
    }


class _MigrationCase(test.NoDBTestCase):
    """The drop-in and a running guest whose domain is a stand-in."""

    def setUp(self):
        super().setUp()
        self.useFixture(nova_fixtures.LibvirtFixture())
        self.driver = LibvirtDriver(fake.FakeVirtAPI(), False)
        self.context = nova_context.get_admin_context()
        self.instance = fake_instance.fake_instance_obj(self.context, vm_state="active")
        self.domain = mock.Mock()
        self.domain.XMLDesc.return_value = RUNNING
        self.guest = libvirt_guest.Guest(self.domain)


class LiveMigrationVolumeTest(_MigrationCase):
    def migrate(self, running=RUNNING):
        """The XML Nova gives libvirt for the destination."""
        self.domain.XMLDesc.return_value = running
        bdm = objects.LibvirtLiveMigrateBDMInfo(
            serial=VOLUME,
            bus="virtio",
            type="disk",
            dev="vdb",
            connection_info=_connection_info(DEST_PATH),
        )
        data = objects.LibvirtLiveMigrateData(
            serial_listen_addr="",
            serial_listen_ports=[],
            target_connect_addr="192.0.2.20",
            bdms=[bdm],
            block_migration=False,
        )
        self.driver._live_migration_operation(
            self.context, self.instance, "dest", False, data, self.guest, ["vda"]
        )
        self.domain.migrateToURI3.assert_called_once()
        params = self.domain.migrateToURI3.call_args.kwargs["params"]
        return etree.fromstring(params["destination_xml"].encode())

    @staticmethod
    def volume(root):
        (disk,) = [d for d in root.iterfind("devices/disk") if d.findtext("serial") == VOLUME]
        return disk

    def test_the_volume_keeps_its_driver_and_iothread(self):
        disk = self.volume(self.migrate())
        self.assertEqual(DEST_PATH, disk.find("source").get("dev"))
        self.assertEqual(
            {
                "name": "qemu",
                "type": "raw",
                "cache": "none",
                "io": "native",
                "discard": "unmap",
                "detect_zeroes": "unmap",
                "iothread": "2",
                "queues": "2",
            },
            dict(disk.find("driver").attrib),
        )

    def test_nova_alone_drops_the_tuning(self):
        # What the seam changes: Nova's own driver on the same migration
        # takes its own <driver> for the volume, unbound from its IOThread.
        with mock.patch.object(LibvirtDriver, "_live_migration_operation", _novas_operation):
            disk = self.volume(self.migrate())
        self.assertEqual(DEST_PATH, disk.find("source").get("dev"))
        self.assertIsNone(disk.find("driver").get("iothread"))
        self.assertIsNone(disk.find("driver").get("detect_zeroes"))

    def test_a_value_the_volume_lacks_stays_absent(self):
        # Nova would set io='native' with cache='none'; the running disk has no io.
        untuned = RUNNING.replace(" io='native' discard='unmap'", "")
        driver = self.volume(self.migrate(untuned)).find("driver")
        self.assertIsNone(driver.get("io"))
        self.assertIsNone(driver.get("discard"))
        self.assertEqual("2", driver.get("iothread"))

    def test_local_disks_stay_as_they_run(self):
        root = self.migrate()
        (local,) = [d for d in root.iterfind("devices/disk") if d.find("serial") is None]
        self.assertEqual("io_uring", local.find("driver").get("io"))
        self.assertEqual("1", local.find("driver").get("iothread"))

    def test_outside_a_migration_nova_builds_the_volume_config(self):
        # A guest config (spawn, hard reboot): _get_guest_config tunes it later.
        conf = self.driver._get_volume_config(
            _connection_info(DEST_PATH), {"bus": "virtio", "dev": "vdb", "type": "disk"}
        )
        self.assertNotIn("iothread", conf.to_xml())
        self.assertIn(DEST_PATH, conf.to_xml())
        self.domain.XMLDesc.assert_not_called()


# Nova's operation, for the comparison.
_novas_operation = nova_driver.LibvirtDriver._live_migration_operation


# The same guest with dedicated CPUs on the source (CPUs 0-1), two IOThreads pinned there.
PINNED = RUNNING.replace(
    "  <os><type>hvm</type></os>",
    """  <cputune>
    <vcpupin vcpu='0' cpuset='0'/>
    <vcpupin vcpu='1' cpuset='1'/>
    <emulatorpin cpuset='0-1'/>
    <iothreadpin iothread='1' cpuset='0-1'/>
    <iothreadpin iothread='2' cpuset='0-1'/>
  </cputune>
  <numatune>
    <memory mode='strict' nodeset='0'/>
    <memnode cellid='0' mode='strict' nodeset='0'/>
  </numatune>
  <os><type>hvm</type></os>""",
)


class LiveMigrationPinnedIOThreadsTest(_MigrationCase):
    """Nova's _update_numa_xml re-pins IOThread 1 only; every IOThread must move."""

    def migrate_pinned(self):
        self.domain.XMLDesc.return_value = PINNED
        data = objects.LibvirtLiveMigrateData(
            serial_listen_addr="",
            serial_listen_ports=[],
            target_connect_addr="192.0.2.20",
            bdms=[],
            block_migration=False,
            dst_numa_info=objects.LibvirtLiveMigrateNUMAInfo(
                cpu_pins={"0": {2}, "1": {3}},
                cell_pins={"0": {0}},
                emulator_pins={2, 3},
            ),
        )
        self.driver._live_migration_operation(
            self.context, self.instance, "dest", False, data, self.guest, ["vda"]
        )
        params = self.domain.migrateToURI3.call_args.kwargs["params"]
        root = etree.fromstring(params["destination_xml"].encode())
        return {p.get("iothread"): p.get("cpuset") for p in root.iterfind("cputune/iothreadpin")}

    def test_every_iothread_moves_to_the_destinations_emulator_cpus(self):
        self.assertEqual({"1": "2-3", "2": "2-3"}, self.migrate_pinned())

    def test_nova_alone_leaves_iothread_2_on_the_source(self):
        with mock.patch.object(LibvirtDriver, "_live_migration_operation", _novas_operation):
            self.assertEqual({"1": "2-3", "2": "0-1"}, self.migrate_pinned())
