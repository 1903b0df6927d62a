"""The e2e infrastructure itself: a hand-written domain boots on the private libvirtd,
the guest writes its pattern to two disks, and QEMU got the disk settings asked for."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

from nova_disk_tuning_bench.guest import console as guest
from nova_disk_tuning_bench.guest import domains, kit, lifecycle

MIB = 1024 * 1024


def _domain_xml(
    name: str, kit: kit.GuestKit, cmdline: str, console: Path, disks: str, iothreads: int = 0
) -> str:
    iothreads_xml = f"<iothreads>{iothreads}</iothreads>" if iothreads else ""
    return f"""
<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  {iothreads_xml}
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(kit.kernel))}</kernel>
    <initrd>{escape(str(kit.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {disks}
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path='{escape(str(console))}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _preallocated_raw(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)


def _qcow2(path: Path, size: int) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)], check=True)


def test_guest_writes_pattern_and_qemu_gets_disk_tuning(
    tmp_path, guest_kit, libvirtd, run_guest, domain_name
):
    def check_private_qemu(dom, argv):
        # QEMU's pid file is in the private run dir and QEMU runs as root: the daemon
        # uses our qemu.conf (user = "root"), not the package's libvirt-qemu default.
        pid = int(libvirtd.qemu_pidfile(dom.name()).read_text())
        assert domains.qemu_cmdline(dom) == argv
        with open(f"/proc/{pid}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["0", "0", "0", "0"]

    raw = tmp_path / "disk1.raw"
    qcow2 = tmp_path / "disk2.qcow2"
    console = tmp_path / "console.log"
    _preallocated_raw(raw, 16 * MIB)
    _qcow2(qcow2, 16 * MIB)
    disks = f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native' iothread='1'/>
      <source file='{escape(str(raw))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='writeback' io='threads'/>
      <source file='{escape(str(qcow2))}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>"""
    xml = _domain_xml(
        domain_name, guest_kit, guest.guest_cmdline(["vda", "vdb"]), console, disks, iothreads=1
    )

    run = run_guest(xml, console, on_start=check_private_qemu)
    print(f"boot to poweroff: {run.boot_seconds:.1f} s")

    # The guest ran its script to the end and verified its own writes.
    assert run.report.booted, lifecycle.tail(console)
    assert run.report.done, lifecycle.tail(console)
    assert run.report.results == {"vda": "ok", "vdb": "ok"}, lifecycle.tail(console)
    assert run.report.sizes == {"vda": 16 * MIB, "vdb": 16 * MIB}
    assert not run.report.failed_modules

    # QEMU's command line: disk 1 O_DIRECT + native AIO on IOThread 1, disk 2 threads.
    disk1 = domains.disk_by_source(run.argv, raw)
    assert disk1.aio == "native"
    assert disk1.cache_direct is True
    # libvirt 11.3 gives a raw file no format node (the device's drive is the file
    # node); 9.0 puts a raw node over it, with the same cache.
    assert disk1.format is None or disk1.format.cache_direct is True
    assert disk1.device is not None and disk1.device.driver.startswith("virtio-blk")
    assert disk1.iothread == "iothread1"
    assert "iothread1" in domains.iothread_ids(run.argv)

    disk2 = domains.disk_by_source(run.argv, qcow2)
    assert disk2.aio == "threads"
    assert disk2.cache_direct is False
    assert disk2.format is not None and disk2.format.driver == "qcow2"
    assert disk2.device is not None and disk2.iothread is None

    # The log libvirt keeps records the same command line after the guest is gone.
    assert domains.qemu_cmdline_from_log(libvirtd.qemu_log(run.name)) == run.argv

    # The data really is in the images, each disk's own pattern, and nothing before it.
    assert domains.read_image(raw, "raw", guest.PATTERN_OFFSET, MIB) == guest.expected_pattern(
        "vda"
    )
    assert domains.read_image(qcow2, "qcow2", guest.PATTERN_OFFSET, MIB) == guest.expected_pattern(
        "vdb"
    )
    assert domains.read_image(raw, "raw", 0, MIB) == bytes(MIB)
    assert domains.read_image(qcow2, "qcow2", 0, MIB) == bytes(MIB)


def test_guest_reports_checksums_and_missing_disks(
    tmp_path, guest_kit, libvirtd, run_guest, domain_name
):
    """The guest's report can say "fail": a disk that never appears is reported missing,
    and the checksum it reports is of what the image holds."""
    image = tmp_path / "base.raw"
    console = tmp_path / "console.log"
    content = (b"nova-disk-tuning e2e " * (MIB // 21 + 1))[:MIB]
    with open(image, "wb") as f:
        f.write(content)
        f.truncate(4 * MIB)
    disks = f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <source file='{escape(str(image))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>"""
    cmdline = guest.guest_cmdline(["vda", "vdq"], sums=[("vda", 0, 1)], timeout=3)
    run = run_guest(_domain_xml(domain_name, guest_kit, cmdline, console, disks), console)

    assert run.report.done, lifecycle.tail(console)
    assert run.report.results == {"vda": "ok", "vdq": "fail missing"}
    assert run.report.sums == {("vda", 0, 1): hashlib.md5(content).hexdigest()}
    # The write came after the checksum, and went to the second MiB only.
    assert domains.read_image(image, "raw", 0, MIB) == content
    assert domains.read_image(image, "raw", MIB, MIB) == guest.expected_pattern("vda")
    disk = domains.disk_by_source(run.argv, image)
    assert disk.cache_direct is False
    assert disk.iothread is None


def test_expected_pattern_is_per_disk():
    # The image checks above would not notice swapped disks if the patterns matched.
    assert guest.expected_pattern("vda") != guest.expected_pattern("vdb")
    assert len(guest.expected_pattern("vda")) == guest.PATTERN_LENGTH
    assert guest.expected_pattern("vda").startswith(b"NDT-PATTERN-vda-NDT-PATTERN-vda-")
