"""``nova-disk-tuning explain`` on real files, against libvirt's test driver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from nova_disk_tuning.cmd import explain, main
from nova_disk_tuning.policy import decide as tuning
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps
from nova_disk_tuning.storage.probe import StorageProbe

MiB = 1 << 20


@pytest.fixture
def run(tmp_path, capsys):
    """Run the CLI with a nova.conf pointing at test:///default; (rc, stdout, stderr)."""
    config = tmp_path / "nova.conf"
    config.write_text(
        f"[DEFAULT]\ninstances_path = {tmp_path}\n[libvirt]\nconnection_uri = test:///default\n"
    )

    def runner(*argv: str, conf_lines: str = ""):
        if conf_lines:
            config.write_text(config.read_text() + conf_lines)
        rc = main.main(["--config-file", str(config), "explain", *argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return runner


def settings(output: str, disk: str) -> dict:
    data = json.loads(output)
    return next(d for d in data["disks"] if d["disk"] == disk)


def sparse_file(tmp_path, size=64 * MiB) -> str:
    path = tmp_path / "sparse"
    with open(path, "wb") as handle:
        handle.truncate(size)
    return str(path)


def written_file(tmp_path, size=8 * MiB) -> str:
    path = tmp_path / "full"
    with open(path, "wb") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())
    return str(path)


def test_sparse_file_gets_threads(run, tmp_path):
    path = sparse_file(tmp_path)
    rc, out, _ = run("--disk", f"path={path}", "--json")
    assert rc == 0
    io = settings(out, "vda")["io"]
    assert io["value"] == "threads"
    assert "allocated" in io["reason"] and path in io["reason"]
    facts = json.loads(out)["facts"][0]
    assert facts["source_type"] == "file" and facts["format"] == "raw"
    assert facts["size"] == 64 * MiB and facts["allocated"] < 64 * MiB


def test_written_file_on_ext4_gets_native(run, tmp_path):
    fs = StorageProbe().fs_type(str(tmp_path))
    if fs not in ("ext4", "xfs"):
        pytest.skip(f"needs ext4 or xfs under the temporary directory, found {fs}")
    path = written_file(tmp_path)
    rc, out, _ = run("--disk", f"path={path}", "--json")
    assert rc == 0
    disk = settings(out, "vda")
    assert disk["cache"]["value"] == "none" and "O_DIRECT works" in disk["cache"]["reason"]
    assert disk["io"]["value"] == "native"
    assert "fully allocated" in disk["io"]["reason"]


def test_forced_native_on_buffered_cache_is_demoted(run, tmp_path):
    path = written_file(tmp_path)
    conf = "disk_cachemodes = file=writeback\n[disk_tuning]\naio_mode = native\n"
    rc, out, _ = run("--disk", f"path={path}", "--json", conf_lines=conf)
    assert rc == 0
    io = settings(out, "vda")["io"]
    assert io["value"] == "threads" and "demoted" in io["reason"]


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img (qemu-utils)")
def test_qcow2_is_detected_and_judged_by_virtual_size(run, tmp_path):
    path = str(tmp_path / "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1G"], check=True)
    rc, out, _ = run("--disk", f"path={path},bus=scsi", "--vcpus", "2", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["facts"][0]["format"] == "qcow2"
    assert data["facts"][0]["size"] == 1 << 30
    sda = settings(out, "sda")
    assert sda["io"]["value"] == "threads" and "of 1.0 GiB allocated" in sda["io"]["reason"]
    assert data["iothreads"]["scsi_controller"]["queues"]["value"] == 2


def test_table_output(run, tmp_path):
    path = sparse_file(tmp_path)
    rc, out, _ = run("--disk", f"path={path},name=root", "--extra-spec", "hw:disk_iothreads=1")
    assert rc == 0
    for column in explain.COLUMNS:
        assert column in out
    # Reasons name options in brackets; the table must not eat them as markup.
    assert "[disk_tuning] detect_zeroes" in out
    assert "hw:disk_iothreads=1" in out
    assert "root" in out and "threads" in out
    assert "libvirt" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--disk", "format=raw"], "needs path=PATH"),
        (["--disk", "path=/x,colour=blue"], "cannot use 'colour=blue'"),
        (["--disk", "path=/no/such/disk"], "no such file or device"),
        (["--disk", "path={sparse},type=block"], "type=block given, but it is a file"),
        (["--disk", "path={sparse}", "--extra-spec", "hw:disk_iothreads=x"], "hw:disk_iothreads"),
        (["--disk", "path={sparse}", "--extra-spec", "nonsense"], "use KEY=VALUE"),
        (["--disk", "path={sparse},volume=nosuch"], "nosuch"),
    ],
)
def test_errors(run, tmp_path, argv, message):
    path = sparse_file(tmp_path)
    rc, out, err = run(*(a.format(sparse=path) for a in argv))
    assert rc == 1
    assert message in err and out == ""


def test_parse_disk_spec():
    # preallocated is measured now: the old flag is accepted and ignored.
    spec = explain.parse_disk_spec("path=/d, format=qcow2 ,shareable,preallocated,bus=sata")
    assert spec == explain.DiskSpec(path="/d", format="qcow2", bus="sata", shareable=True)


def test_volume_spec_takes_the_drivers_hint(run, tmp_path):
    path = written_file(tmp_path)
    rc, out, _ = run("--disk", f"path={path},volume=nfs", "--json")
    assert rc == 0
    facts = json.loads(out)["facts"][0]
    assert (facts["is_volume"], facts["driver"], facts["aio_hint"]) == (True, "nfs", "native")
    assert "volume driver nfs" in settings(out, "vda")["io"]["reason"]
    rc, out, _ = run(
        "--disk",
        f"path={path},volume=nfs",
        "--json",
        conf_lines="use_default_aio_mode_for_volumes = true\n",
    )
    assert (
        "ignored ([libvirt] use_default_aio_mode_for_volumes)"
        in settings(out, "vda")["io"]["reason"]
    )


def test_rows_for_an_instance_are_reusable(make_conf):
    conf = make_conf(disk_tuning={"iothreads": 2})
    facts = [
        DiskFacts(name="vda", source_type="block", path="/dev/vg/x", direct_io=True),
        DiskFacts(name="sdb", source_type="network", bus="scsi"),
    ]
    result = tuning.tune_guest(facts, HostCaps((9, 0, 0), (7, 2, 0), True), conf, 2)
    rows = explain.explanation_rows(result)
    assert rows[0][:3] == ("(guest)", "iothreads", "2")
    assert rows[1][:3] == ("(virtio-scsi)", "iothread", "2")
    vda = {row[1]: row[2] for row in rows if row[0] == "vda"}
    assert vda["io"] == "native" and vda["discard"] == "-" and vda["iothread"] == "1"
    assert explain.format_value({1: [0, 2], 2: [1]}) == "1:0,2 2:1"


def test_a_27th_disk_on_a_bus_is_refused_as_spawn_refuses_it(run, tmp_path):
    path = sparse_file(tmp_path, size=MiB)
    rc, out, err = run(*[arg for _ in range(27) for arg in ("--disk", f"path={path}")])
    assert rc == 1 and out == ""
    assert "more than 26 disks on bus virtio" in err
