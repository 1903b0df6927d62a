"""The audit of domain XML against the tuning policy, with facts handed in."""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from nova_disk_tuning import audit, exception
from nova_disk_tuning import domxml as config
from nova_disk_tuning.policy import safety as tuning_checks
from nova_disk_tuning.policy.decide import tune_guest
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps

GiB = 1 << 30
HOST = HostCaps(libvirt_version=(9, 0, 0), qemu_version=(7, 2, 0), kernel_io_uring=True)


class FakeMeasure:
    """Facts by path, as the CLI's measurer would report them; records calls."""

    def __init__(self, facts: dict[str, dict]) -> None:
        self.facts = facts
        self.calls: list[audit.DiskSource] = []

    def __call__(self, source: audit.DiskSource) -> DiskFacts:
        self.calls.append(source)
        values = self.facts[source.path]
        if isinstance(values, Exception):
            raise values
        return DiskFacts(
            name=source.name,
            source_type=source.source_type,
            format=source.format or "raw",
            path=source.path,
            bus=source.bus,
            shareable=source.shareable,
            **values,
        )


SPARSE = {"size": 10 * GiB, "allocated": GiB, "direct_io": True}
FULL = {"size": 10 * GiB, "allocated": 10 * GiB, "direct_io": True}


@pytest.fixture
def files(tmp_path):
    """Existing paths (the audit checks that a disk's path exists before measuring)."""

    def make(name: str) -> str:
        path = tmp_path / name
        path.touch()
        return str(path)

    return make


def disk_xml(path: str, dev: str = "vda", kind: str = "file", bus: str = "virtio", **driver):
    attrs = " ".join(f"{k}='{v}'" for k, v in {"name": "qemu", "type": "raw", **driver}.items())
    source = f"<source {'file' if kind == 'file' else 'dev'}='{path}'/>"
    return (
        f"<disk type='{kind}' device='disk'><driver {attrs}/>{source}"
        f"<target dev='{dev}' bus='{bus}'/></disk>"
    )


def domain_xml(*disks: str, name: str = "g1", vcpus: int = 1, iothreads: int | None = None):
    threads = f"<iothreads>{iothreads}</iothreads>" if iothreads else ""
    return (
        f"<domain type='kvm'><name>{name}</name><memory>131072</memory><vcpu>{vcpus}</vcpu>"
        f"{threads}<os><type>hvm</type></os><devices>{''.join(disks)}</devices></domain>"
    )


def run(xml: str, measure, conf) -> list[audit.Finding]:
    name, findings = audit.audit_xml(xml, HOST, conf, measure)
    assert name == etree.fromstring(xml.encode()).findtext("name")
    return findings


def rules_of(findings) -> list[tuple[str, str, str]]:
    return [(f.disk, f.severity, f.rule) for f in findings]


def attrs(fragment: str) -> dict[str, str]:
    return dict(etree.fromstring(fragment.encode()).attrib)


# One problem per domain ---------------------------------------------------------


def test_native_without_direct_cache_is_unsafe(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="writeback", io="native", iothread=1), iothreads=1)
    findings = run(xml, FakeMeasure({path: FULL}), conf)
    assert rules_of(findings) == [("vda", "unsafe", "native-without-direct-cache")]
    (finding,) = findings
    assert "QEMU refuses to start" in finding.message
    assert attrs(finding.current) == {
        "name": "qemu", "type": "raw", "cache": "writeback", "io": "native", "iothread": "1",
    }  # fmt: skip
    assert attrs(finding.suggested) == {
        "name": "qemu", "type": "raw", "cache": "none", "io": "native", "iothread": "1",
        "queues": "1",
    }  # fmt: skip
    assert "O_DIRECT works at" in finding.reason


def test_native_without_cache_attribute_is_writeback_and_unsafe(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, io="native", iothread=1), iothreads=1)
    findings = run(xml, FakeMeasure({path: FULL}), conf)
    assert rules_of(findings) == [("vda", "unsafe", "native-without-direct-cache")]
    assert "cache writeback" in findings[0].message


def test_native_on_sparse_file_is_unsafe(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="none", io="native", iothread=1), iothreads=1)
    findings = run(xml, FakeMeasure({path: SPARSE}), conf)
    assert rules_of(findings) == [("vda", "unsafe", "native-on-sparse-file")]
    assert "1.0 GiB of 10.0 GiB allocated" in findings[0].message
    assert attrs(findings[0].suggested)["io"] == "threads"


def test_direct_cache_where_o_direct_fails_is_unsafe(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="none", io="threads", iothread=1), iothreads=1)
    facts = {**SPARSE, "direct_io": False}
    findings = run(xml, FakeMeasure({path: facts}), conf)
    assert rules_of(findings) == [("vda", "unsafe", "direct-cache-without-o-direct")]
    assert attrs(findings[0].suggested)["cache"] == "writeback"


def test_threads_on_preallocated_file_is_slow(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="none", io="threads", iothread=1), iothreads=1)
    findings = run(xml, FakeMeasure({path: FULL}), conf)
    assert rules_of(findings) == [("vda", "slow", "threads-on-preallocated")]
    assert attrs(findings[0].suggested)["io"] == "native"


def test_unset_io_on_block_device_is_slow(files, conf):
    path = files("dev")
    xml = domain_xml(disk_xml(path, kind="block", cache="none", iothread=1), iothreads=1)
    findings = run(xml, FakeMeasure({path: {"direct_io": True}}), conf)
    assert rules_of(findings) == [("vda", "slow", "threads-on-preallocated")]
    assert "unset (QEMU's default: threads)" in findings[0].message
    assert f"block device {path}" in findings[0].message


def test_threads_is_not_reported_when_the_policy_keeps_threads(files, make_conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="none", io="threads", iothread=1), iothreads=1)
    conf = make_conf(disk_tuning={"aio_mode": "threads"})
    assert run(xml, FakeMeasure({path: FULL}), conf) == []


def test_writethrough_is_slow(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="writethrough", io="threads", iothread=1), iothreads=1)
    findings = run(xml, FakeMeasure({path: SPARSE}), conf)
    assert rules_of(findings) == [("vda", "slow", "writethrough-cache")]
    assert attrs(findings[0].suggested)["cache"] == "none"


def test_writethrough_chosen_by_the_operator_is_not_reported(files, make_conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="writethrough", io="threads", iothread=1), iothreads=1)
    conf = make_conf(libvirt={"disk_cachemodes": ["file=writethrough"]})
    assert run(xml, FakeMeasure({path: SPARSE}), conf) == []


def test_unbound_disk_with_many_vcpus_is_slow_and_gets_iothreads_too(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="none", io="threads"), vcpus=4)
    findings = run(xml, FakeMeasure({path: SPARSE}), conf)
    assert rules_of(findings) == [("vda", "slow", "no-iothread")]
    assert "(4 vCPUs)" in findings[0].message
    driver, threads = findings[0].suggested.split("\n")
    assert attrs(driver) == {
        "name": "qemu", "type": "raw", "cache": "none", "io": "threads", "iothread": "1",
        "queues": "4",
    }  # fmt: skip
    assert threads == "<iothreads>1</iothreads>"


def test_unbound_disk_is_not_reported_when_iothreads_are_off(files, make_conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="none", io="threads"), vcpus=4)
    conf = make_conf(disk_tuning={"iothreads": 0})
    assert run(xml, FakeMeasure({path: SPARSE}), conf) == []


def test_idle_iothreads_nova_33_style(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="none", io="threads"), vcpus=4, iothreads=1)
    findings = run(xml, FakeMeasure({path: SPARSE}), conf)
    assert rules_of(findings) == [
        ("(guest)", "slow", "idle-iothreads"),
        ("vda", "slow", "no-iothread"),
    ]
    guest = findings[0]
    assert guest.current == guest.suggested == "<iothreads>1</iothreads>"
    # The guest already has the IOThread: the disk's fix is the binding alone.
    assert "\n" not in findings[1].suggested
    assert "it does not use" in findings[1].message


def test_idle_iothreads_on_a_sata_only_guest_says_remove(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, dev="sda", bus="sata", cache="none", io="threads"),
                     iothreads=2)  # fmt: skip
    findings = run(xml, FakeMeasure({path: SPARSE}), conf)
    assert rules_of(findings) == [("(guest)", "slow", "idle-iothreads")]
    assert findings[0].suggested is None and "remove <iothreads>" in findings[0].message


def test_discard_unmap_on_preallocated_raw_is_inconsistent(files, conf):
    path = files("disk")
    xml = domain_xml(
        disk_xml(path, cache="none", io="native", discard="unmap", iothread=1), iothreads=1
    )
    findings = run(xml, FakeMeasure({path: FULL}), conf)
    assert rules_of(findings) == [("vda", "inconsistent", "discard-unmap-preallocated")]
    assert "discard" not in attrs(findings[0].suggested)


def test_discard_unmap_kept_when_the_config_asks_for_it(files, make_conf):
    # hw_disk_discard=unmap and no discard_no_unref on libvirt 9.0: the policy
    # renders the same, and its reason says what was given up.
    path = files("disk")
    xml = domain_xml(
        disk_xml(path, cache="none", io="native", discard="unmap", iothread=1), iothreads=1
    )
    conf = make_conf(libvirt={"hw_disk_discard": "unmap"})
    assert run(xml, FakeMeasure({path: FULL}), conf) == []


def test_qcow2_with_discard_no_unref_is_consistent(files, conf):
    path = files("disk")
    xml = domain_xml(
        disk_xml(path, type="qcow2", cache="none", io="native", discard="unmap",
                 discard_no_unref="on", iothread=1),
        iothreads=1,
    )  # fmt: skip
    findings = run(xml, FakeMeasure({path: FULL}), conf)
    assert "discard-unmap-preallocated" not in [f.rule for f in findings]


def test_missing_path_is_a_finding_not_a_crash(tmp_path, conf):
    present = tmp_path / "present"
    present.touch()
    missing = str(tmp_path / "gone")
    xml = domain_xml(
        disk_xml(missing, cache="none", io="native"),
        disk_xml(str(present), dev="vdb", cache="none", io="threads", iothread=2),
        iothreads=2,
    )
    measure = FakeMeasure({str(present): SPARSE})
    findings = run(xml, measure, conf)
    assert rules_of(findings) == [("vda", "unaudited", "path-missing")]
    assert f"cannot audit: path missing: {missing}" in findings[0].message
    # The missing disk still counts in the IOThread plan: vdb stays on IOThread 2.
    assert [s.name for s in measure.calls] == ["vdb"]


def test_measuring_failure_is_unaudited(files, conf):
    path = files("disk")
    error = exception.QemuImgError(command="info", path=path, reason="boom")
    xml = domain_xml(disk_xml(path, type="qcow2", cache="none", iothread=1), iothreads=1)
    findings = run(xml, FakeMeasure({path: error}), conf)
    assert rules_of(findings) == [("vda", "unaudited", "cannot-audit")]
    assert "boom" in findings[0].message


def test_what_the_measurer_is_told(files, conf):
    path = files("disk")
    xml = domain_xml(
        disk_xml(path, type="qcow2", cache="none", iothread=1).replace(
            "</disk>", "<shareable/></disk>"
        ),
        iothreads=1,
    )
    measure = FakeMeasure({path: SPARSE})
    run(xml, measure, conf)
    assert measure.calls == [
        audit.DiskSource(name="vda", source_type="file", path=path, format="qcow2",
                         bus="virtio", shareable=True)
    ]  # fmt: skip


def test_network_disk_and_cdrom_are_not_measured(conf):
    xml = domain_xml(
        "<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none' "
        "iothread='1'/><source protocol='rbd' name='pool/vol'/><target dev='vda' bus='virtio'/>"
        "</disk>",
        "<disk type='file' device='cdrom'><source file='/nonexistent.iso'/>"
        "<target dev='hdc' bus='ide'/></disk>",
        iothreads=1,
    )
    measure = FakeMeasure({})
    assert run(xml, measure, conf) == []
    assert measure.calls == []


# A domain rendered by our own tuning has no findings ------------------------------


@pytest.mark.parametrize("vcpus", [1, 4])
def test_domain_tuned_by_the_policy_is_clean(files, make_conf, vcpus):
    sparse, full, qcow, dev = files("sparse"), files("full"), files("qcow"), files("dev")
    facts = {
        sparse: SPARSE,
        full: FULL,
        qcow: {**FULL, "format": "qcow2"},
        dev: {"direct_io": True},
    }
    conf = make_conf(libvirt={"hw_disk_discard": "unmap"}, disk_tuning={"iothreads": 2})
    measured = [
        DiskFacts(name="vda", source_type="file", path=sparse, **SPARSE),
        DiskFacts(name="vdb", source_type="file", path=full, **FULL),
        DiskFacts(name="vdc", source_type="file", format="qcow2", path=qcow, **FULL),
        DiskFacts(name="sda", source_type="block", path=dev, bus="scsi", direct_io=True),
    ]
    guest = config.LibvirtConfigGuest(virt_type="kvm", name="tuned", vcpus=vcpus)
    for fact in measured:
        guest.add_device(
            config.LibvirtConfigGuestDisk(
                source_type=fact.source_type, source_path=fact.path, driver_name="qemu",
                driver_format=fact.format, target_dev=fact.name, target_bus=fact.bus,
            )
        )  # fmt: skip
    guest.add_device(config.LibvirtConfigGuestController(type="scsi", model="virtio-scsi"))
    tune_guest(measured, HOST, conf, vcpus).apply_to_guest(guest)
    measure = FakeMeasure({path: {k: v for k, v in f.items() if k != "format"}
                           for path, f in facts.items()})  # fmt: skip
    assert run(guest.to_xml(), measure, conf) == []
    assert len(measure.calls) == 4


def test_suggested_fragment_keeps_the_disk_config_unchanged(files, conf):
    path = files("disk")
    xml = domain_xml(disk_xml(path, cache="writethrough", io="threads", iothread=1), iothreads=1)
    guest = config.LibvirtConfigGuest()
    guest.parse_str(xml)
    before = copy.deepcopy(guest.devices[0])
    run(xml, FakeMeasure({path: SPARSE}), conf)
    assert guest.devices[0] == before


# Files and reports ------------------------------------------------------------


def test_audit_files_reports_each_domain(tmp_path, files, conf):
    path = files("disk")
    one = tmp_path / "one.xml"
    one.write_text(domain_xml(disk_xml(path, cache="writethrough", iothread=1), iothreads=1))
    two = tmp_path / "two.xml"
    two.write_text(domain_xml(disk_xml(path, cache="none", iothread=1), name="g2", iothreads=1))
    report = audit.audit_files([str(one), str(two)], HOST, conf, FakeMeasure({path: SPARSE}))
    assert report.domains == ["g1", "g2"]
    assert [f.rule for f in report.findings] == ["writethrough-cache"]
    assert report.summary() == {"unsafe": 0, "inconsistent": 0, "slow": 1, "unaudited": 0}
    data = report.to_dict()
    assert data["findings"][0]["domain"] == "g1" and data["summary"]["slow"] == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read domain XML"),
        ("<domain", "not XML"),
        ("<network><name>n</name></network>", "root element"),
    ],
)
def test_audit_files_errors_name_the_file(tmp_path, conf, content, expected):
    path = tmp_path / "bad.xml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(exception.InvalidConfig) as raised:
        audit.audit_files([str(path)], HOST, conf, FakeMeasure({}))
    assert str(path) in str(raised.value) and expected in str(raised.value)


# The safety predicates ---------------------------------------------------------


def _facts(**values) -> DiskFacts:
    return DiskFacts(name="vda", source_type="file", path="/d", **values)


@pytest.mark.parametrize(
    ("io", "cache", "unsafe"),
    [
        ("native", "none", False),
        ("native", "directsync", False),
        ("native", "writeback", True),
        ("native", None, True),
        ("native", "default", True),
        ("threads", "writeback", False),
        ("io_uring", "writeback", False),
        (None, None, False),
    ],
)
def test_native_without_direct_cache(io, cache, unsafe):
    assert bool(tuning_checks.native_without_direct_cache(io, cache)) is unsafe


def test_native_on_sparse_file_predicate():
    sparse = _facts(size=100, allocated=10)
    assert tuning_checks.native_on_sparse_file("native", sparse)
    assert not tuning_checks.native_on_sparse_file("threads", sparse)
    assert not tuning_checks.native_on_sparse_file("native", _facts(size=100, allocated=100))
    # Not measured: not claimed unsafe.
    assert not tuning_checks.native_on_sparse_file("native", _facts())
    block = DiskFacts(name="vda", source_type="block", path="/dev/x", size=1, allocated=0)
    assert not tuning_checks.native_on_sparse_file("native", block)


def test_direct_cache_without_o_direct_predicate():
    assert tuning_checks.direct_cache_without_o_direct("none", _facts(direct_io=False))
    assert not tuning_checks.direct_cache_without_o_direct("none", _facts(direct_io=None))
    assert not tuning_checks.direct_cache_without_o_direct("writeback", _facts(direct_io=False))


def test_trim_unpreallocates_predicate():
    full = _facts(size=100, allocated=100)
    assert tuning_checks.trim_unpreallocates("unmap", None, full)
    # Preallocated means measured: a verdict of full allocation counts too.
    assert tuning_checks.trim_unpreallocates("unmap", None, _facts(fully_allocated=True))
    assert not tuning_checks.trim_unpreallocates("unmap", None, _facts(size=100, allocated=1))
    assert not tuning_checks.trim_unpreallocates("ignore", None, full)
    qcow = _facts(size=100, allocated=100, format="qcow2")
    assert not tuning_checks.trim_unpreallocates("unmap", "on", qcow)
    assert tuning_checks.trim_unpreallocates("unmap", "off", qcow)
    # discard_no_unref is qcow2 only.
    assert tuning_checks.trim_unpreallocates("unmap", "on", full)
