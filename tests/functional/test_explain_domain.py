"""``explain NAME`` for a domain someone else defined (Nova: ``instance-0000002a``).

The domain lives in libvirt's test driver, validated against the schema;
its disks are real files, measured when explain runs. The decisions must be
the ones ``explain --disk`` gives for the same files (one policy, one way
of measuring).
"""

import json

import pytest

from tests.functional import test_audit
from tests.functional.test_audit import URI, disk_xml, domain_xml

# The test driver's domains and real disk files, as the audit tests make them.
define, disks, host = test_audit.define, test_audit.disks, test_audit.host


@pytest.fixture
def explain(tmp_path, capsys):
    return test_audit.in_process_cli(tmp_path, capsys, "explain")


@pytest.fixture
def conf(make_conf):
    return make_conf(libvirt={"connection_uri": URI})


def test_a_novas_domain_is_explained_by_name_and_uuid(explain, define, disks, host):
    both = disk_xml(disks["full"], "vda") + disk_xml(disks["sparse"], "vdb")
    name = define(domain_xml("instance-0000002a", both, vcpus=2))
    uuid = host.get_connection().lookupByName(name).UUIDString()
    rc, out, err = explain(name, "--json")
    assert rc == 0, err
    by_name = json.loads(out)
    rc, out, _ = explain(uuid, "--json")
    assert rc == 0 and json.loads(out) == by_name
    decided = {d["disk"]: d for d in by_name["disks"]}
    # Measured: the preallocated file takes native AIO, the sparse one threads.
    assert decided["vda"]["io"]["value"] == "native"
    assert decided["vdb"]["io"]["value"] == "threads"
    rc, out, _ = explain(
        "--disk",
        f"path={disks['full']},name=vda",
        "--disk",
        f"path={disks['sparse']},name=vdb",
        "--vcpus",
        "2",
        "--json",
    )
    by_disk = {d["disk"]: d for d in json.loads(out)["disks"]}
    for target in ("vda", "vdb"):
        for setting in ("cache", "io", "discard"):
            assert decided[target][setting] == by_disk[target][setting], (target, setting)


def test_an_unknown_name_is_one_line(explain):
    rc, _, err = explain("instance-00000bad")
    assert rc == 1
    assert err.strip().count("\n") == 0 and "instance-00000bad" in err and "virsh list" in err


NOVA_METADATA = (
    "<metadata><nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>"
    "<nova:flavor name='m1'><nova:vcpus>2</nova:vcpus><nova:extraSpecs>"
    "<nova:extraSpec name='hw:disk_iothreads'>{}</nova:extraSpec>"
    "</nova:extraSpecs></nova:flavor></nova:instance></metadata>"
)


def _with_metadata(xml: str, value: str) -> str:
    return xml.replace("<memory>", NOVA_METADATA.format(value) + "<memory>", 1)


def test_the_flavor_extra_spec_nova_recorded_is_used(explain, define, disks):
    both = disk_xml(disks["full"], "vda") + disk_xml(disks["sparse"], "vdb")
    name = define(_with_metadata(domain_xml("instance-0000002b", both, vcpus=2), "2"))
    rc, out, err = explain(name, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["iothreads"]["count"]["value"] == 2
    assert "hw:disk_iothreads" in data["iothreads"]["count"]["reason"]
    threads = {d["disk"]: d["iothread"]["value"] for d in data["disks"]}
    assert threads == {"vda": 1, "vdb": 2}


def test_a_bad_recorded_extra_spec_is_ignored_with_a_warning(explain, define, disks):
    disk = disk_xml(disks["full"], "vda")
    name = define(_with_metadata(domain_xml("instance-0000002c", disk, vcpus=2), "many"))
    rc, out, err = explain(name, "--json")
    assert rc == 0, err
    assert json.loads(out)["iothreads"]["count"]["value"] == 1  # [disk_tuning] iothreads
