"""bench guest: the guest's console lines, the fio job files and terse results, the domain."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from lxml import etree
from nova_disk_tuning_bench.guest import boot, console, initramfs, jobs, lifecycle, matrix
from nova_disk_tuning_bench.guest.errors import GuestKitError, GuestLost, GuestRunError, GuestStuck
from nova_disk_tuning_bench.guest.kit import GuestKit

from nova_disk_tuning import domxml
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.policy.facts import DiskFacts

# A real line of fio 3.33 (randrw, 4k, QD4): read IOPS 14366, write IOPS 14324.
TERSE = (
    "3;fio-3.33;t;0;0;57524;57466;14366;1001;3;5304;14.356624;130.952777;0;9893;100.809599;31"
    "1.052717;1.000000%=31;5.000000%=50;10.000000%=57;20.000000%=64;30.000000%=70;40.000000%="
    "74;50.000000%=78;60.000000%=82;70.000000%=87;80.000000%=93;90.000000%=103;95.000000%=121"
    ";99.000000%=238;99.500000%=929;99.900000%=4554;99.950000%=7372;99.990000%=9895;0%=0;0%=0"
    ";0%=0;25;9897;115.166223;337.982350;55336;55336;96.293460%;55336.000000;0.000000;57356;5"
    "7298;14324;1001;4;4991;12.466598;85.421889;0;28007;149.128462;622.105406;1.000000%=47;5."
    "000000%=62;10.000000%=70;20.000000%=78;30.000000%=84;40.000000%=89;50.000000%=94;60.0000"
    "00%=99;70.000000%=105;80.000000%=114;90.000000%=132;95.000000%=158;99.000000%=1859;99.50"
    "0000%=3915;99.900000%=6127;99.950000%=8290;99.990000%=27918;0%=0;0%=0;0%=0;18;28012;161."
    "595060;628.219836;55640;55640;97.106356%;55640.000000;0.000000;5.800000%;33.300000%;1458"
    "1;0;15;0.1%;0.1%;100.0%;0.0%;0.0%;0.0%;0.0%;0.39%;0.02%;0.00%;0.02%;2.56%;70.71%;24.84%;"
    "0.39%;0.09%;0.06%;0.24%;0.35%;0.31%;0.00%;0.01%;0.00%;0.00%;0.00%;0.00%;0.00%;0.00%;0.00"
    "%;vda;12062;12191;0;3821;1015;2439;3457;59.40%"
)
TIMING = jobs.Timing(runtime=20, ramp=2)


def test_terse_line_read_and_write_sides():
    read = jobs.parse_terse(TERSE, "read")
    assert (read.iops, read.bandwidth_kib) == (14366.0, 57466.0)
    assert read.lat_mean_us == pytest.approx(115.166223) and read.lat_p99_us == 238.0
    write = jobs.parse_terse(TERSE, "write")
    assert (write.iops, write.bandwidth_kib) == (14324.0, 57298.0)
    assert write.lat_mean_us == pytest.approx(161.59506) and write.lat_p99_us == 1859.0


def test_terse_errors_are_refused():
    fields = TERSE.split(";")
    fields[4] = "5"
    with pytest.raises(ValueError, match="error 5"):
        jobs.parse_terse(";".join(fields), "read")
    with pytest.raises(ValueError, match="terse version 3"):
        jobs.parse_terse("3;fio-3.33;t;0;0;1", "read")
    with pytest.raises(ValueError, match="terse version 3"):
        jobs.parse_terse("2" + TERSE[1:], "read")


def test_job_file_has_the_job_and_the_common_options():
    job = jobs.job_by_name("syncwrite-8k-qd1")
    text = jobs.render(job, TIMING, "/dev/vda")
    lines = text.splitlines()
    assert lines[:2] == ["[syncwrite-8k-qd1]", "filename=/dev/vda"]
    for option in ("ioengine=libaio", "direct=1", "rw=write", "bs=8k", "iodepth=1",
                   "sync=dsync", "time_based=1", "runtime=20", "ramp_time=2",
                   "fallocate=none"):  # fmt: skip
        assert option in lines
    assert "size=" not in text
    host = jobs.render(jobs.job_by_name("seqwrite-1m-qd8"), TIMING, "/x/disk", size=1 << 30)
    assert "size=1073741824" in host.splitlines() and "bs=1m" in host and "sync=" not in host
    assert jobs.describe(job, TIMING).startswith("fio --ioengine=libaio --direct=1 --rw=write")


def test_every_job_reads_or_writes():
    assert [j.direction for j in jobs.JOBS] == ["read", "write", "write", "write", "write"]
    with pytest.raises(Exception, match="unknown fio job"):
        jobs.job_by_name("nope")


def test_jobs_archive_holds_target_order_and_job_files(tmp_path):
    path = tmp_path / "jobs.tar"
    jobs.jobs_archive(str(path), jobs.JOBS[:2], TIMING, "vda")
    assert path.stat().st_size % 512 == 0
    with tarfile.open(path) as archive:
        members = {m.name: archive.extractfile(m).read().decode() for m in archive.getmembers()}
    assert members["target"] == "vda\n"
    assert members["jobs"] == "randread-4k-qd32\nrandwrite-4k-qd32\n"
    assert members["randread-4k-qd32.fio"] == jobs.render(jobs.JOBS[0], TIMING, "/dev/vda")


CONSOLE = f"""[    3.1] Run /init as init process
NDT-BOOT kit-1
NDT-FIO-VERSION fio-3.33
NDT-FIO-START randread-4k-qd32
[    9.2] random: crng init done NDT-FIO randread-4k-qd32 ok {TERSE}
NDT-FIO-START randwrite-4k-qd32
NDT-FIO randwrite-4k-qd32 fail fio: pid=0, err=28/file:io_u.c:1845, error=No space left
NDT-BENCH done
NDT-DONE
"""


def test_console_lines_of_a_bench_guest():
    report = console.parse_console(CONSOLE)
    assert report.booted and report.done and report.bench_done
    assert report.fio_version == "fio-3.33"
    assert report.fio["randread-4k-qd32"] == console.FioOutcome(True, TERSE)
    assert not report.fio["randwrite-4k-qd32"].ok
    assert "No space left" in report.fio["randwrite-4k-qd32"].detail
    assert report.fio_started == "randwrite-4k-qd32"
    failed = console.parse_console("NDT-BOOT k\nNDT-BENCH fail missing vdb\nNDT-DONE\n")
    assert failed.bench_error == "missing vdb" and not failed.bench_done


def test_cmdline_names_the_jobs_disk_and_a_ramfs_root():
    line = console.guest_cmdline(bench="vdb")
    assert "ndt.bench=vdb" in line.split() and "rootfstype=ramfs" in line.split()
    assert "ndt.disks" not in line


def test_check_report_says_what_went_wrong():
    two = jobs.JOBS[:2]
    with pytest.raises(GuestRunError, match="never reached its init"):
        boot.check_report("g", console.parse_console("kernel panic\n"), two)
    with pytest.raises(GuestRunError, match="randwrite-4k-qd32 failed in the guest: fio: pid=0"):
        boot.check_report("g", console.parse_console(CONSOLE), two)
    with pytest.raises(GuestRunError, match="could not run the jobs: missing vdb"):
        boot.check_report("g", console.parse_console("NDT-BOOT k\nNDT-BENCH fail missing vdb"), two)
    with pytest.raises(GuestRunError, match="printed no result"):
        boot.check_report("g", console.parse_console("NDT-BOOT k\n"), two)
    results = boot.check_report("g", console.parse_console(CONSOLE), jobs.JOBS[:1])
    assert results["randread-4k-qd32"].iops == 14366.0


def _data_disk(path: str = "/w/disk.eph0") -> GuestDisk:
    config = domxml.LibvirtConfigGuestDisk(
        source_type="file", source_path=path, driver_name="qemu", driver_format="raw",
        target_dev="vda", target_bus="virtio",
    )  # fmt: skip
    facts = DiskFacts(name="vda", source_type="file", path=path, size=1, allocated=1)
    return GuestDisk(config=config, facts=facts)


def _domain(variant: matrix.Variant) -> etree._Element:
    kit = GuestKit("k", Path("/k"), Path("/k/vmlinuz"), Path("/k/initrd.img"), "6.1", (), "fio")
    guest = boot.domain_config("g", kit, variant, _data_disk(), "/w/jobs.tar", "/w/c.log", 2, 512)
    return etree.fromstring(guest.to_xml())


def test_domain_of_each_named_variant():
    defaults = _domain(matrix.defaults_variant())
    assert defaults.get("type") == "qemu" and defaults.find("iothreads") is None
    driver = defaults.find("devices/disk/driver")
    assert dict(driver.attrib) == {"name": "qemu", "type": "raw"}
    assert defaults.findtext("os/cmdline").endswith("ndt.bench=vdb ndt.timeout=60")
    jobs_disk = defaults.findall("devices/disk")[1]
    assert jobs_disk.find("readonly") is not None and jobs_disk.find("target").get("dev") == "vdb"

    nova = _domain(matrix.nova_variant(matrix.LAYOUTS[0], _data_disk().facts))
    assert nova.findtext("iothreads") == "1"
    assert dict(nova.find("devices/disk/driver").attrib) == {
        "name": "qemu", "type": "raw", "cache": "none", "io": "native",
    }  # fmt: skip

    cell = matrix.Variant(
        "none+io_uring+iot", matrix.Cell("none", "io_uring", True), 2, 1, True, ""
    )
    driver = _domain(cell).find("devices/disk/driver")
    assert (driver.get("io"), driver.get("iothread"), driver.get("queues")) == (
        "io_uring",
        "1",
        "2",
    )

    spread = matrix.Variant(
        "none+native+iotq", matrix.Cell("none", "native", True, spread=True), 4, 2, True, ""
    )
    domain = _domain(spread)
    assert domain.findtext("iothreads") == "2"
    driver = domain.find("devices/disk/driver")
    assert driver.get("iothread") is None and driver.get("queues") == "4"
    mapping = {
        thread.get("id"): [queue.get("id") for queue in thread.findall("queue")]
        for thread in driver.findall("iothreads/iothread")
    }
    assert mapping == {"1": ["0", "2"], "2": ["1", "3"]}


def test_a_pinned_kvm_domain_places_every_thread():
    kit = GuestKit("k", Path("/k"), Path("/k/vmlinuz"), Path("/k/initrd.img"), "6.1", (), "fio")
    variant = matrix.nova_variant(matrix.LAYOUTS[0], _data_disk().facts)  # one IOThread
    guest = boot.domain_config(
        "g", kit, variant, _data_disk(), "/w/jobs.tar", "/w/c.log", 4, 512,
        virt_type="kvm", host_cpus=[2, 5],
    )  # fmt: skip
    root = etree.fromstring(guest.to_xml())
    assert root.get("type") == "kvm"
    pins = {
        (p.tag, p.get("vcpu") or p.get("iothread"), p.get("cpuset")) for p in root.find("cputune")
    }
    assert pins == {
        ("vcpupin", "0", "2"), ("vcpupin", "1", "5"), ("vcpupin", "2", "2"), ("vcpupin", "3", "5"),
        ("iothreadpin", "1", "5"), ("emulatorpin", None, "5"),
    }  # fmt: skip
    assert _domain(variant).find("cputune") is None  # not pinned unless asked


def test_driver_element_is_the_disks_driver():
    disk = _data_disk()
    disk.config.driver_cache = "none"
    assert boot.driver_element(disk.config) == '<driver name="qemu" type="raw" cache="none"/>'


LDD = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibaio.so.1 => /lib/x86_64-linux-gnu/libaio.so.1 (0x00007fe030aad000)
\tlibceph-common.so.2 => /usr/lib/x86_64-linux-gnu/ceph/libceph-common.so.2 (0x00007fe026600000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fe030bd2000)
"""


def test_ldd_output_gives_every_library_and_the_loader():
    assert initramfs.parse_ldd(LDD) == [
        "/lib/x86_64-linux-gnu/libaio.so.1",
        "/usr/lib/x86_64-linux-gnu/ceph/libceph-common.so.2",
        "/lib64/ld-linux-x86-64.so.2",
    ]
    with pytest.raises(GuestKitError, match=r"libnuma\.so\.1 => not found"):
        initramfs.parse_ldd("\tlibnuma.so.1 => not found\n")


def test_cpio_makes_parent_directories_once():
    archive = initramfs.Cpio()
    archive.file("/usr/lib/x/a.so", b"a")
    archive.file("/usr/lib/x/b.so", b"b")
    names = []
    data = io.BytesIO(archive.finish())
    while True:
        header = data.read(110)
        size, namesize = int(header[54:62], 16), int(header[94:102], 16)
        name = data.read(namesize)[:-1].decode()
        data.read(-(110 + namesize) % 4)
        data.read(size + (-size % 4))
        if name == "TRAILER!!!":
            break
        names.append(name)
    assert names == ["usr", "usr/lib", "usr/lib/x", "usr/lib/x/a.so", "usr/lib/x/b.so"]


def test_last_words_say_why_a_guest_stopped():
    panic = (
        "[ 1.0] Run /init as init process\n"
        "[ 1.2] Kernel panic - not syncing: no init\n"
        "[ 1.3] ---[ end trace ]---\n"
    )
    assert console.last_words(panic) == "'[ 1.2] Kernel panic - not syncing: no init'"
    qemu = (  # as libvirt writes it: the command line one argument per line
        "2026-12-03 09:41:02.114+0000: starting up libvirt version: 11.3.0\n"
        "LC_ALL=C \\\n"
        "/usr/bin/qemu-system-x86_64 \\\n"
        "-name guest=ndt-bench-raw-prealloc-defaults-1,debug-threads=on \\\n"
        '-blockdev \'{"driver":"file","filename":"/w/d","werror":"report"}\' \\\n'
        "-msg timestamp=on\n"
        "qemu-system-x86_64: terminating on signal 15 from pid 7\n"
        "2026-12-03 shutting down, reason=destroyed\n"
    )
    assert console.last_words(qemu) == (
        "'qemu-system-x86_64: terminating on signal 15 from pid 7'"
        " / '2026-12-03 shutting down, reason=destroyed'"
    )
    assert console.last_words("booting\nstill booting\n") == "'still booting'"
    assert console.last_words("") == "nothing"


# libvirt's test driver stands in for the private libvirtd (a real QEMU ending
# under its guest is tests/e2e/test_bench_guest_hang.py). Each test has its own
# persistent domain: the driver's shared ``test`` domain would carry one test's
# state into the next.
TEST_GUEST = "<domain type='test'><name>ndt-lifecycle</name><memory>1024</memory>" \
    "<os><type>hvm</type></os></domain>"  # fmt: skip


@pytest.fixture
def test_conn():
    import libvirt

    conn = libvirt.open("test:///default")
    yield conn
    if "ndt-lifecycle" in [dom.name() for dom in conn.listAllDomains()]:
        lifecycle.discard(conn.lookupByName("ndt-lifecycle"))
    conn.close()


@pytest.fixture
def running(test_conn):
    dom = test_conn.defineXML(TEST_GUEST)
    dom.create()
    return dom


def test_a_guest_that_does_not_power_off_is_stuck_and_destroyed(tmp_path, running):
    import libvirt

    with pytest.raises(GuestStuck, match=r"did not shut off within 0 s \(running\)"):
        lifecycle.wait_for_shutoff(running, timeout=0.3, console_log=tmp_path / "none.log")
    assert running.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF  # destroyed on the way out


def test_a_guest_that_powered_off_is_done(tmp_path, running):
    running.shutdown()  # the guest's own power-off: shutoff reason "shutdown"
    # Even with no time left: the state is read once more after the deadline.
    lifecycle.wait_for_shutoff(running, timeout=0, console_log=tmp_path / "none.log")
    assert lifecycle.lost_reason(running) is None


def test_a_guest_stopped_under_it_is_lost_not_stuck(tmp_path, running):
    """What libvirt says of the stop is in the message; it is not a hang."""
    running.destroy()  # stands in for QEMU killed under the guest (reason "crashed" there)
    expected = r"ndt-lifecycle: QEMU ended without the guest powering off \(libvirt: destroyed\)"
    with pytest.raises(GuestLost, match=expected) as info:
        lifecycle.wait_for_shutoff(running, timeout=5, console_log=tmp_path / "none.log")
    assert not isinstance(info.value, GuestStuck)
    assert info.value.why == "QEMU ended without the guest powering off (libvirt: destroyed)"


def test_a_running_guest_is_not_lost_after_settling(running):
    import time

    started = time.monotonic()
    assert lifecycle.lost_reason(running, settle=0.3) is None
    assert time.monotonic() - started >= 0.3  # it looked for that long
    running.destroy()
    assert "libvirt: destroyed" in (lifecycle.lost_reason(running, settle=30) or "")


class _Refusing:
    """A domain whose start libvirt refuses (the test driver starts any it defines)."""

    def __init__(self, dom):
        self._dom = dom

    def __getattr__(self, attr):
        return getattr(self._dom, attr)

    def createWithFlags(self, flags):
        import libvirt

        raise libvirt.libvirtError("refused to start")


def test_a_start_libvirt_refuses_leaves_no_definition_behind(test_conn):
    import libvirt

    class Conn:
        def defineXML(self, xml):
            return _Refusing(test_conn.defineXML(xml))

    with pytest.raises(libvirt.libvirtError, match="refused to start"):
        lifecycle.start_paused(Conn(), TEST_GUEST)
    assert "ndt-lifecycle" not in test_conn.listDefinedDomains()


def test_a_discarded_guest_is_stopped_and_undefined(test_conn, running):
    import libvirt

    lifecycle.discard(running)
    with pytest.raises(libvirt.libvirtError) as info:
        test_conn.lookupByName("ndt-lifecycle")
    assert info.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    lifecycle.discard(running)  # twice is harmless: a failed boot's cleanup may repeat
