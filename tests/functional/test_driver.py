"""The compute driver on libvirt's test driver: real disks, real qemu-img, real libvirt.

``test:///default`` defines domains with ``VIR_DOMAIN_DEFINE_VALIDATE``
(libvirt's RelaxNG schema) and keeps them in the memory of the process: one
pytest process shares them across tests (names here are unique per test),
and a CLI run in a subprocess starts with none, which is how the tests check
that instances survive a new process.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import libvirt
import pytest

from nova_disk_tuning import conf as ndt_conf
from nova_disk_tuning import exception
from nova_disk_tuning.agent import loader
from nova_disk_tuning.agent.driver import LibvirtDriver
from nova_disk_tuning.agent.instance import Flavor, ImageMeta, Instance
from nova_disk_tuning.cmd import main as cli
from nova_disk_tuning.images.cache import ImageCache
from nova_disk_tuning.images.sample import build_sample_image as build_image

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "connection_info"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    return build_image(str(tmp_path_factory.mktemp("image")), size_mb=32, name="func")


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "nova.conf"
    path.write_text(
        f"[DEFAULT]\ninstances_path = {tmp_path / 'instances'}\npreallocate_images = space\n"
        "[libvirt]\nconnection_uri = test:///default\nvirt_type = qemu\n"
    )
    return path


@pytest.fixture
def conf(config_file):
    return ndt_conf.new_conf([str(config_file)])


@pytest.fixture
def driver(conf) -> LibvirtDriver:
    return loader.compute_driver("libvirt")(conf)


@pytest.fixture
def name() -> str:
    return f"func-{uuid.uuid4().hex[:10]}"


def image_meta(path: str, image_id: str = "func-image", **kwargs) -> ImageMeta:
    return ImageMeta(id=image_id, source=path, disk_format="qcow2", **kwargs)


def run_cli(config_file: Path, *argv: str) -> subprocess.CompletedProcess:
    """The CLI in a new process: libvirt's test driver starts empty there."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "nova_disk_tuning.cmd.main",
            "--config-file",
            str(config_file),
            *argv,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def domain_names(conn) -> set[str]:
    return {d.name() for d in conn.listAllDomains()}


def test_spawn_list_show_explain_destroy_round_trip(driver, conf, image, name, capsys):
    result = driver.spawn(
        Instance(name), image_meta(image), Flavor(vcpus=2, ephemeral_gb=1, swap_mb=64)
    )
    uuid_ = result.record.to_dict()["uuid"]
    instance_dir = Path(conf.instances_path) / uuid_

    # libvirt has the domain, defined from the XML in the instance directory.
    domain = driver.host.get_connection().lookupByUUIDString(uuid_)
    assert domain.name() == name
    assert (instance_dir / "libvirt.xml").read_text() == result.xml
    record = json.loads((instance_dir / "instance.json").read_text())
    assert record["name"] == name and record["flavor"]["ephemeral_gb"] == 1
    assert [d["target"] for d in record["disks"]] == ["vda", "vdb", "vdc"]
    assert [d["kind"] for d in record["disks"]] == ["root", "ephemeral", "swap"]
    for entry in record["disks"]:
        assert os.path.exists(entry["path"]) and entry["path"].startswith(str(instance_dir))
        assert entry["facts"]["preallocated"] is True  # preallocate_images=space
    assert record["tuning"]["disks"][0]["io"]["value"] == "native"

    assert name in driver.list_instances()
    xml = driver.get_xml(name)
    assert re.search(r"<driver name='qemu' type='qcow2' cache='none' io='native'", xml)
    assert "<iothreads>1</iothreads>" in xml
    assert str(instance_dir / "console.log") in xml

    info = {d["target"]: d for d in driver.get_instance_disk_info(name)}
    assert info["vdb"]["virt_disk_size"] == 1 << 30
    assert info["vdb"]["disk_size"] >= 1 << 30  # fallocated
    assert info["vda"]["backing_file"] == result.record.to_dict()["image"]["cached_path"]

    assert cli.main(["--config-file", conf.config_file[0], "explain", name]) == 0
    table = capsys.readouterr().out
    assert "vdc" in table and "native" in table and "round-robin" in table
    assert cli.main(["--config-file", conf.config_file[0], "explain", name, "--json"]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert explained["disks"] == record["tuning"]["disks"]

    driver.destroy(name)
    assert name not in domain_names(driver.host.get_connection())
    assert not instance_dir.exists()
    assert name not in driver.list_instances()
    # The image cache keeps its entry for the next spawn.
    assert os.path.exists(result.record.to_dict()["image"]["cached_path"])
    with pytest.raises(exception.InstanceNotFound):
        driver.destroy(name)


def test_state_survives_a_new_process(config_file, driver, image, name):
    spawned = run_cli(config_file, "spawn", name, "--image", image, "--json")
    assert spawned.returncode == 0, spawned.stderr
    record = json.loads(spawned.stdout)
    conn = driver.host.get_connection()
    # This process's test driver never saw the domain...
    assert name not in domain_names(conn)
    # ...and a new driver object defines it again from libvirt.xml on first use.
    fresh = LibvirtDriver(ndt_conf.new_conf([str(config_file)]))
    assert name in fresh.list_instances()
    assert conn.lookupByName(name).UUIDString() == record["uuid"]
    assert "<disk type='file' device='disk'>" in fresh.get_xml(name)

    # Other processes see it too, and destroy it there.
    listed = run_cli(config_file, "list", "--json")
    assert name in [row["name"] for row in json.loads(listed.stdout)], listed.stderr
    shown = run_cli(config_file, "show", name)
    assert shown.returncode == 0 and f"<name>{name}</name>" in shown.stdout
    destroyed = run_cli(config_file, "destroy", name)
    assert destroyed.returncode == 0, destroyed.stderr
    assert not (Path(fresh.store.instance_dir(record["uuid"]))).exists()
    assert run_cli(config_file, "show", name).returncode == 1


def _leftovers(conf) -> list[str]:
    root = Path(conf.instances_path)
    return sorted(p.name for p in root.iterdir() if p.name not in ("_base", "locks"))


@pytest.mark.parametrize(
    "connection_info, error",
    [
        # A local volume without data.device_path: fails after root and ephemeral exist.
        ({"driver_volume_type": "local", "data": {}}, exception.InvalidConnectionInfo),
        # A transport nobody installed.
        ({"driver_volume_type": "carrier-pigeon", "data": {}}, exception.PluginNotFound),
        # A block volume whose device is gone.
        (
            {"driver_volume_type": "iscsi", "data": {"device_path": "/dev/disk/by-id/none"}},
            exception.VolumeDriverError,
        ),
    ],
)
def test_failure_part_way_removes_what_this_spawn_made(
    driver, conf, image, name, connection_info, error
):
    other = driver.spawn(Instance(f"{name}-other"), image_meta(image), Flavor())
    other_dir = Path(driver.store.instance_dir(other.record.to_dict()["uuid"]))
    before = sorted(os.listdir(other_dir))
    cached = other.record.to_dict()["image"]["cached_path"]

    with pytest.raises(error):
        driver.spawn(
            Instance(name),
            image_meta(image),
            Flavor(ephemeral_gb=1),
            {"block_device_mapping": [{"connection_info": connection_info}]},
        )

    conn = driver.host.get_connection()
    assert name not in domain_names(conn)
    assert _leftovers(conf) == [other.record.to_dict()["uuid"]]
    assert name not in driver.list_instances()
    # The other instance and the image cache are untouched.
    assert sorted(os.listdir(other_dir)) == before
    assert conn.lookupByName(f"{name}-other").UUIDString() == other.record.to_dict()["uuid"]
    assert os.path.exists(cached)
    assert [e.path for e in ImageCache(conf).list()] == [cached]
    # The name is free again.
    driver.spawn(Instance(name), image_meta(image), Flavor())
    driver.destroy(name)
    driver.destroy(f"{name}-other")


def test_failure_at_define_removes_disks_and_directory(driver, conf, image, name):
    conn = driver.host.get_connection()
    # A domain of that name exists that the plugin did not make: refused up front.
    with pytest.raises(exception.InstanceExists, match="did not create"):
        driver.spawn(Instance("test"), image_meta(image), Flavor())  # the test driver's own
    assert not os.path.isdir(conf.instances_path) or _leftovers(conf) == []

    # While the image converts, someone else defines a domain with this
    # instance's UUID: libvirt refuses our definition after the disks exist.
    instance = Instance(name)
    intruder = f"{name}-intruder"

    def progress(_percent: float) -> None:
        if intruder not in domain_names(conn):
            conn.defineXML(
                f"<domain type='test'><name>{intruder}</name><uuid>{instance.uuid}</uuid>"
                "<memory>1024</memory><os><type>hvm</type></os></domain>"
            )

    with pytest.raises(exception.HypervisorError, match=f"defining instance {name}"):
        driver.spawn(
            instance,
            image_meta(image, f"uncached-{name}"),
            Flavor(ephemeral_gb=1),
            progress=progress,
        )
    assert name not in domain_names(conn)
    assert _leftovers(conf) == []
    # Not ours: left alone.
    assert conn.lookupByName(intruder).UUIDString() == instance.uuid
    conn.lookupByName(intruder).undefine()


def test_two_instances_share_one_cache_entry(driver, conf, image, name):
    first = driver.spawn(Instance(f"{name}-1"), image_meta(image, "shared"), Flavor())
    second = driver.spawn(Instance(f"{name}-2"), image_meta(image, "shared"), Flavor())
    assert first.image.created is True and second.image.created is False
    assert first.record.to_dict()["image"]["cache_hit"] is False
    assert second.record.to_dict()["image"]["cache_hit"] is True
    assert first.image.path == second.image.path
    assert [e.image_id for e in ImageCache(conf).list()] == ["shared"]
    # Both overlays use the one base; destroying one leaves the other's base.
    driver.destroy(f"{name}-1")
    assert os.path.exists(second.image.path)
    driver.destroy(f"{name}-2")


def test_concurrent_spawns_of_one_uncached_image_convert_it_once(config_file, image, name):
    def spawn(index: int) -> subprocess.CompletedProcess:
        return run_cli(config_file, "-v", "spawn", f"{name}-{index}", "--image", image, "--json")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(spawn, range(4)))
    for run in runs:
        assert run.returncode == 0, run.stderr
    hits = [json.loads(run.stdout)["image"]["cache_hit"] for run in runs]
    assert sorted(hits) == [False, True, True, True]
    logs = "".join(run.stderr for run in runs)
    assert logs.count("converting qcow2 to raw") == 1
    conf = ndt_conf.new_conf([str(config_file)])
    assert len(ImageCache(conf).list()) == 1
    for index in range(4):
        assert run_cli(config_file, "destroy", f"{name}-{index}").returncode == 0


def test_instance_exists(driver, image, name):
    driver.spawn(Instance(name), image_meta(image), Flavor())
    try:
        with pytest.raises(exception.InstanceExists):
            driver.spawn(Instance(name), image_meta(image), Flavor())
    finally:
        driver.destroy(name)


def test_scsi_bus_gets_a_virtio_scsi_controller_with_an_iothread(driver, image, name):
    meta = image_meta(image, properties={"hw_disk_bus": "scsi"})
    driver.spawn(Instance(name), meta, Flavor(ephemeral_gb=1))
    try:
        xml = driver.get_xml(name)
        assert "<target dev='sda' bus='scsi'/>" in xml
        assert "<target dev='sdb' bus='scsi'/>" in xml
        assert re.search(r"<controller type='scsi' index='0' model='virtio-scsi'>\s*"
                         r"<driver queues='1' iothread='1'/>", xml)  # fmt: skip
    finally:
        driver.destroy(name)


def test_direct_kernel_boot_copies_kernel_and_ramdisk(driver, image, name, tmp_path):
    kernel, ramdisk = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"kernel")
    ramdisk.write_bytes(b"initrd")
    meta = image_meta(image, kernel=str(kernel), ramdisk=str(ramdisk), cmdline="console=ttyS0")
    result = driver.spawn(Instance(name), meta, Flavor())
    try:
        instance_dir = Path(driver.store.instance_dir(result.record.to_dict()["uuid"]))
        xml = driver.get_xml(name)
        assert f"<kernel>{instance_dir / 'kernel'}</kernel>" in xml
        assert f"<initrd>{instance_dir / 'ramdisk'}</initrd>" in xml
        assert "<cmdline>console=ttyS0</cmdline>" in xml
        assert (instance_dir / "kernel").read_bytes() == b"kernel"
    finally:
        driver.destroy(name)


def test_hand_edited_native_with_writeback_is_refused(driver, image, name):
    result = driver.spawn(Instance(name), image_meta(image), Flavor())
    conn = driver.host.get_connection()
    try:
        xml_path = Path(driver.store.xml_path(result.record.to_dict()["uuid"]))
        bad = xml_path.read_text().replace('cache="none"', 'cache="writeback"')
        assert 'io="native"' in bad and 'cache="writeback"' in bad
        xml_path.write_text(bad)
        # libvirt lost the domain (a new process on the test driver): not defined again.
        conn.lookupByName(name).undefine()
        with pytest.raises(exception.InvalidDiskConfig, match="native AIO needs an O_DIRECT"):
            driver.list_instances()
        assert name not in domain_names(conn)
        # The test driver itself accepts this XML, schema and all: the guard is ours.
        conn.defineXMLFlags(bad, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        with pytest.raises(exception.InvalidDiskConfig, match="cache=writeback"):
            driver.power_on(name)
        assert not conn.lookupByName(name).isActive()
    finally:
        driver.destroy(name)


def test_power_on_and_off(driver, image, name):
    driver.spawn(Instance(name), image_meta(image), Flavor(), start=True)
    conn = driver.host.get_connection()
    try:
        assert conn.lookupByName(name).isActive()
        driver.power_off(name)
        assert not conn.lookupByName(name).isActive()
        driver.power_on(name)
        assert conn.lookupByName(name).isActive()
        driver.power_off(name, timeout=2, retry_interval=0.1)  # clean shutdown
        assert not conn.lookupByName(name).isActive()
    finally:
        driver.destroy(name)


def test_cli_spawn_with_volume_and_errors(config_file, image, name, tmp_path):
    bad = tmp_path / "volume.json"
    info = json.loads((FIXTURES / "local.json").read_text())
    bad.write_text(json.dumps(info))  # its device_path does not exist on this host
    run = run_cli(config_file, "spawn", name, "--image", image, "--volume", str(bad))
    assert run.returncode == 1
    assert "does not exist" in run.stderr and "Reconnect the volume" in run.stderr
    assert "Traceback" not in run.stderr
    assert run_cli(config_file, "show", name).returncode == 1
    missing = run_cli(config_file, "explain")
    assert missing.returncode == 1 and "instance NAME or at least one --disk" in missing.stderr
