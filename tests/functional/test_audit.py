"""``nova-disk-tuning audit`` on real files, against libvirt's test driver.

Domains are defined (schema-validated) in test:///default, which lives in
this process: the audit reads them through the same connection, and the
in-process CLI sees them too. Facts come from real sparse and fallocated
files, qcow2 images made by qemu-img and, as root, a loop device.
"""

from __future__ import annotations

import json
import os
import subprocess

import libvirt
import pytest
from lxml import etree

from nova_disk_tuning import audit
from nova_disk_tuning import domxml as config
from nova_disk_tuning.cmd import audit as audit_cmd
from nova_disk_tuning.cmd import main
from nova_disk_tuning.host import Host
from nova_disk_tuning.policy.decide import tune_guest

MiB = 1 << 20
URI = "test:///default"


@pytest.fixture
def conf(make_conf):
    return make_conf(libvirt={"connection_uri": URI})


@pytest.fixture
def host(conf):
    with Host(conf) as h:
        yield h


@pytest.fixture
def define(host):
    """define(xml) -> name: a validated domain in the test driver, undefined afterwards."""
    defined = []

    def factory(xml: str) -> str:
        domain = host.get_connection().defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        defined.append(domain)
        return domain.name()

    yield factory
    for domain in defined:
        domain.undefine()


@pytest.fixture
def disks(tmp_path):
    """Real disk files on this host's file system (ext4 here, O_DIRECT works)."""
    paths = {name: str(tmp_path / name) for name in ("sparse", "full", "overlay", "qcow2-full")}
    with open(paths["sparse"], "wb") as handle:
        handle.truncate(64 * MiB)
    fd = os.open(paths["full"], os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 64 * MiB)
    finally:
        os.close(fd)
    qemu_img = ["qemu-img", "create", "-q", "-f", "qcow2"]
    # A fresh qcow2 is small *and* fully allocated as a file: only its
    # virtual size (qemu-img info) shows that it allocates on write.
    subprocess.run([*qemu_img, paths["overlay"], "64M"], check=True)
    subprocess.run(
        [*qemu_img, "-o", "preallocation=falloc", paths["qcow2-full"], "64M"], check=True
    )
    paths["missing"] = str(tmp_path / "gone")
    return paths


def disk_xml(path: str, dev: str = "vda", kind: str = "file", fmt: str = "raw", **driver) -> str:
    attrs = " ".join(f"{k}='{v}'" for k, v in {"name": "qemu", "type": fmt, **driver}.items())
    source = f"<source {'file' if kind == 'file' else 'dev'}='{path}'/>"
    return (
        f"<disk type='{kind}' device='disk'><driver {attrs}/>{source}"
        f"<target dev='{dev}' bus='virtio'/></disk>"
    )


def domain_xml(name: str, disk: str, vcpus: int = 1, iothreads: int | None = 1) -> str:
    threads = f"<iothreads>{iothreads}</iothreads>" if iothreads else ""
    return (
        f"<domain type='qemu'><name>{name}</name><memory>131072</memory><vcpu>{vcpus}</vcpu>"
        f"{threads}<os><type>hvm</type></os><devices>{disk}</devices></domain>"
    )


def attrs(fragment: str) -> dict[str, str]:
    return dict(etree.fromstring(fragment.encode()).attrib)


def driver(fmt: str = "raw", **values: str) -> dict[str, str]:
    return {"name": "qemu", "type": fmt, **values}


# (domain suffix, disk file, driver attributes, vcpus, iothreads)
# -> [(disk, severity, rule)], the suggested <driver> of the first finding.
PROBLEMS = {
    "native-writeback": (
        ("full", {"cache": "writeback", "io": "native", "iothread": 1}, 1, 1),
        [("vda", "unsafe", "native-without-direct-cache")],
        driver(cache="none", io="native", iothread="1", queues="1"),
    ),
    "native-sparse": (
        ("sparse", {"cache": "none", "io": "native", "iothread": 1}, 1, 1),
        [("vda", "unsafe", "native-on-sparse-file")],
        driver(cache="none", io="threads", iothread="1", queues="1"),
    ),
    "native-qcow2-overlay": (
        ("overlay", {"fmt": "qcow2", "cache": "none", "io": "native", "iothread": 1}, 1, 1),
        [("vda", "unsafe", "native-on-sparse-file")],
        driver("qcow2", cache="none", io="threads", iothread="1", queues="1"),
    ),
    "threads-full": (
        ("full", {"cache": "none", "io": "threads", "iothread": 1}, 1, 1),
        [("vda", "slow", "threads-on-preallocated")],
        driver(cache="none", io="native", iothread="1", queues="1"),
    ),
    "threads-qcow2-full": (
        ("qcow2-full", {"fmt": "qcow2", "cache": "none", "io": "threads", "iothread": 1}, 1, 1),
        [("vda", "slow", "threads-on-preallocated")],
        driver("qcow2", cache="none", io="native", iothread="1", queues="1"),
    ),
    "writethrough": (
        ("sparse", {"cache": "writethrough", "io": "threads", "iothread": 1}, 1, 1),
        [("vda", "slow", "writethrough-cache")],
        driver(cache="none", io="threads", iothread="1", queues="1"),
    ),
    "no-iothread": (
        ("sparse", {"cache": "none", "io": "threads"}, 4, None),
        [("vda", "slow", "no-iothread")],
        driver(cache="none", io="threads", iothread="1", queues="4"),
    ),
    "idle-iothreads": (
        ("sparse", {"cache": "none", "io": "threads"}, 4, 1),
        [("(guest)", "slow", "idle-iothreads"), ("vda", "slow", "no-iothread")],
        None,
    ),
    "discard-unmap": (
        ("full", {"cache": "none", "io": "native", "discard": "unmap", "iothread": 1}, 1, 1),
        [("vda", "inconsistent", "discard-unmap-preallocated")],
        driver(cache="none", io="native", iothread="1", queues="1"),
    ),
    "missing": (
        ("missing", {"cache": "none", "io": "native", "iothread": 1}, 1, 1),
        [("vda", "unaudited", "path-missing")],
        None,
    ),
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_each_problem_is_found(host, conf, define, disks, problem):
    (disk, settings, vcpus, iothreads), expected, suggested = PROBLEMS[problem]
    settings = dict(settings)
    fmt = settings.pop("fmt", "raw")
    name = define(
        domain_xml(f"audit-{problem}", disk_xml(disks[disk], fmt=fmt, **settings), vcpus, iothreads)
    )
    report = audit.audit_connection(host, conf, audit_cmd.measurer(conf), [name])
    assert report.domains == [name]
    assert [(f.disk, f.severity, f.rule) for f in report.findings] == expected
    first = report.findings[0]
    if suggested is not None:
        assert attrs(first.suggested.split("\n")[0]) == suggested
    if problem == "idle-iothreads":
        assert first.suggested == "<iothreads>1</iothreads>"
    if problem == "no-iothread":
        assert first.suggested.split("\n")[1] == "<iothreads>1</iothreads>"
    if problem == "missing":
        assert "cannot audit: path missing" in first.message and disks["missing"] in first.message


def test_block_device_with_threads_is_slow(host, conf, define, loop_device):
    loop = loop_device()
    xml = domain_xml("audit-block", disk_xml(loop.path, kind="block", cache="none", iothread=1))
    name = define(xml)
    report = audit.audit_connection(host, conf, audit_cmd.measurer(conf), [name])
    assert [(f.severity, f.rule) for f in report.findings] == [("slow", "threads-on-preallocated")]
    assert attrs(report.findings[0].suggested) == driver(
        cache="none", io="native", iothread="1", queues="1"
    )
    assert f"block device {loop.path}" in report.findings[0].message


def tuned_domain_xml(conf, disks, host, name: str, vcpus: int) -> str:
    """A guest rendered by our own policy from the facts measured now."""
    measure = audit_cmd.measurer(conf)
    sources = [
        audit.DiskSource(f"vd{letter}", "file", disks[key], fmt, "virtio", False)
        for letter, (key, fmt) in zip(
            "abcd",
            [("sparse", "raw"), ("full", "raw"), ("overlay", "qcow2"), ("qcow2-full", "qcow2")],
            strict=True,
        )
    ]
    facts = [measure(source) for source in sources]
    guest = config.LibvirtConfigGuest(virt_type="qemu", name=name, memory=131072, vcpus=vcpus)
    for fact in facts:
        guest.add_device(
            config.LibvirtConfigGuestDisk(
                source_type="file", source_path=fact.path, driver_name="qemu",
                driver_format=fact.format, target_dev=fact.name, target_bus="virtio",
            )
        )  # fmt: skip
    tune_guest(facts, host.caps(), conf, vcpus).apply_to_guest(guest)
    return guest.to_xml()


@pytest.mark.parametrize("vcpus", [1, 4])
def test_domain_tuned_by_the_policy_has_no_findings(make_conf, define, disks, vcpus):
    conf = make_conf(
        libvirt={"connection_uri": URI, "hw_disk_discard": "unmap"},
        disk_tuning={"iothreads": 2},
    )
    with Host(conf) as host:
        xml = tuned_domain_xml(conf, disks, host, f"audit-tuned-{vcpus}", vcpus)
        # Sanity: the mix really exercises native and threads.
        root = etree.fromstring(xml.encode())
        assert {d.get("io") for d in root.iterfind("devices/disk/driver")} == {"native", "threads"}
        name = define(xml)
        report = audit.audit_connection(host, conf, audit_cmd.measurer(conf), [name])
    assert report.domains == [name]
    assert report.findings == []


# The command line -----------------------------------------------------------------


def in_process_cli(tmp_path, capsys, command: str):
    """Run ``command`` of the CLI in-process (it sees the test driver's domains).

    Returns ``run(*argv) -> (rc, stdout, stderr)``.
    """
    nova_conf = tmp_path / "nova.conf"
    nova_conf.write_text(
        f"[DEFAULT]\ninstances_path = {tmp_path}\n[libvirt]\nconnection_uri = {URI}\n"
    )

    def run(*argv: str):
        rc = main.main(["--config-file", str(nova_conf), command, *argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture
def cli(tmp_path, capsys):
    return in_process_cli(tmp_path, capsys, "audit")


def test_cli_findings_exit_3_with_table_and_json(cli, define, disks):
    name = define(
        domain_xml("audit-cli", disk_xml(disks["sparse"], cache="writethrough", iothread=1))
    )
    rc, out, _ = cli("--domain", name)
    assert rc == audit_cmd.EXIT_FINDINGS == 3
    assert "writethrough-cache" in out and "slow" in out and 'cache="none"' in out
    rc, out, _ = cli("--domain", name, "--json")
    assert rc == 3
    data = json.loads(out)
    assert data["domains"] == [name] and data["summary"]["slow"] == 1
    (finding,) = data["findings"]
    assert finding["rule"] == "writethrough-cache" and 'cache="writethrough"' in finding["current"]


def test_cli_clean_domain_exits_0(cli, conf, define, disks, host):
    name = define(tuned_domain_xml(conf, disks, host, "audit-cli-clean", 2))
    rc, out, _ = cli("--domain", name)
    assert rc == audit_cmd.EXIT_CLEAN == 0
    assert "No findings: 1 domain(s)" in out


def test_cli_all_domains_includes_the_test_drivers_own(cli):
    # test:///default's domain "test" has a disk at /guest/diskimage1.
    rc, out, _ = cli("--json")
    data = json.loads(out)
    assert "test" in data["domains"]
    assert rc == 3 if data["findings"] else rc == 0
    if not os.path.exists("/guest/diskimage1"):
        assert {"disk": "vda", "domain": "test", "rule": "path-missing"}.items() <= next(
            f for f in data["findings"] if f["domain"] == "test"
        ).items()


def test_cli_files(cli, conf, disks, host, tmp_path):
    bad = tmp_path / "bad.xml"
    bad_disk = disk_xml(disks["full"], cache="writeback", io="native")
    bad.write_text(domain_xml("f1", bad_disk, iothreads=None))
    good = tmp_path / "good.xml"
    good.write_text(tuned_domain_xml(conf, disks, host, "f2", 1))
    assert cli(str(good))[0] == 0
    rc, out, _ = cli(str(good), str(bad), "--json")
    assert rc == 3
    data = json.loads(out)
    assert data["domains"] == ["f2", "f1"]
    assert {f["rule"] for f in data["findings"]} == {"native-without-direct-cache", "no-iothread"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/nonexistent/domain.xml"], "cannot read domain XML /nonexistent/domain.xml"),
        (["--domain", "audit-no-such-domain"], "no domain audit-no-such-domain"),
        (["--connect", "test:///nonexistent/custom.xml"], "cannot connect"),
    ],
)
def test_cli_errors_exit_1(cli, argv, message):
    rc, out, err = cli(*argv)
    assert rc == audit_cmd.EXIT_ERROR == 1
    assert message in err and out == ""


def test_cli_unparseable_file_exits_1(cli, tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text("<domain><name>x</name>")
    rc, _, err = cli(str(path))
    assert rc == 1 and str(path) in err and "not XML" in err


def test_cli_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main.main(["audit", "--help"])
    out = capsys.readouterr().out
    assert "exit status" in out
    for line in ("0  no findings", "1  error", "3  at least one finding"):
        assert line in out


def test_cli_files_without_a_daemon(disks, tmp_path, capsys):
    """Auditing files needs no libvirtd: versions unknown, one note, findings kept."""
    nova_conf = tmp_path / "nova-nodaemon.conf"
    # A QEMU URI whose socket does not exist: what a host without libvirtd gives.
    nova_conf.write_text(
        f"[DEFAULT]\ninstances_path = {tmp_path}\n[libvirt]\n"
        f"connection_uri = qemu+unix:///system?socket={tmp_path}/no-such-libvirt-sock\n"
    )
    bad = tmp_path / "bad.xml"
    bad.write_text(
        domain_xml("f1", disk_xml(disks["full"], cache="writeback", io="native"), iothreads=None)
    )
    rc = main.main(["--config-file", str(nova_conf), "audit", str(bad), "--json"])
    out, err = capsys.readouterr()
    assert rc == audit_cmd.EXIT_FINDINGS
    notes = [line for line in err.splitlines() if "versions unknown" in line]
    assert len(notes) == 1, err
    data = json.loads(out)
    assert {f["rule"] for f in data["findings"]} == {"native-without-direct-cache", "no-iothread"}
    # An explicit --connect that fails is still an error.
    rc = main.main(
        [
            "--config-file",
            str(nova_conf),
            "audit",
            str(bad),
            "--connect",
            "test:///nonexistent/x.xml",
        ]
    )
    assert rc == audit_cmd.EXIT_ERROR
    assert "cannot connect" in capsys.readouterr().err
