"""Image backends without storage: exact argv, exact XML, errors before any I/O.

Ceph cannot run here, so the ``rbd`` CLI is replaced by a recording runner;
LVM's commands likewise (their effect on real devices is in
tests/functional/test_imagebackend.py). No qemu-img runs in this file.
"""

from __future__ import annotations

import pytest
from oslo_concurrency import processutils

from nova_disk_tuning import exception
from nova_disk_tuning.agent.imagebackend.base import disk_name, root_size
from nova_disk_tuning.agent.imagebackend.lvm import Lvm
from nova_disk_tuning.agent.imagebackend.rbd import Rbd, parse_mon_host, read_mon_host
from nova_disk_tuning.images.cache import CachedImage
from tests.unit.domxml.test_config_strategies import assert_xml_equal

MiB = 1 << 20
UUID = "6f1c2b9e-3d4a-4c8b-9e0f-1a2b3c4d5e6f"
SECRET = "0b1e8d3c-6a5f-4d2e-9c7b-5f4e3d2c1b0a"
BASE = CachedImage("/var/lib/nova/instances/_base/" + "a" * 40, "raw", 8 * MiB, created=False)


class Recorder:
    """A runner that records argv and fails the commands named in ``fail``."""

    def __init__(self, fail: dict[str, str] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail or {}

    def __call__(self, *argv: str, **kwargs: object) -> tuple[str, str]:
        self.calls.append(list(argv))
        key = " ".join(argv[:2])
        if key in self.fail:
            raise processutils.ProcessExecutionError(
                exit_code=1, stderr=self.fail[key], cmd=" ".join(argv)
            )
        return "", ""


# Names and sizes -----------------------------------------------------------------


def test_disk_names_are_novas():
    assert [disk_name("root"), disk_name("ephemeral"), disk_name("ephemeral", 2)] == [
        "disk",
        "disk.eph0",
        "disk.eph2",
    ]
    assert disk_name("swap") == "disk.swap"
    with pytest.raises(exception.InvalidDiskConfig, match="unknown disk kind 'config'"):
        disk_name("config")


def test_root_size_defaults_to_the_image_and_refuses_smaller_flavors():
    assert root_size(BASE, None) == root_size(BASE, 0) == 8 * MiB
    assert root_size(BASE, 1 << 30) == 1 << 30
    with pytest.raises(exception.ImageUnacceptable, match="at least 1 GiB"):
        root_size(BASE, 4 * MiB)


# RBD --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "monitors"),
    [
        ("10.0.0.1", [("10.0.0.1", None)]),
        ("10.0.0.1:6789,mon-2.example:6790", [("10.0.0.1", 6789), ("mon-2.example", 6790)]),
        (
            "10.0.0.1 10.0.0.2;10.0.0.3",
            [("10.0.0.1", None), ("10.0.0.2", None), ("10.0.0.3", None)],
        ),
        ("[2001:db8::1]:6789, [2001:db8::2]", [("2001:db8::1", 6789), ("2001:db8::2", None)]),
        (
            "[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0],[v2:10.0.0.2:3300/0,v1:10.0.0.2:6789/0]",
            [("10.0.0.1", 3300), ("10.0.0.2", 3300)],
        ),
        ("[v1:[2001:db8::1]:6789/0]", [("2001:db8::1", 6789)]),
    ],
)
def test_parse_mon_host(value, monitors):
    assert parse_mon_host(value) == monitors


def test_parse_mon_host_rejects_garbage():
    with pytest.raises(exception.InvalidConfig, match=r"cannot read Ceph monitor address 'a:b:c'"):
        parse_mon_host("a:b:c")


def test_read_mon_host_from_a_tab_indented_ceph_conf(tmp_path):
    path = tmp_path / "ceph.conf"
    path.write_text(
        "# cluster\n[global]\n\tfsid = 1234\n\tmon host = 10.0.0.1:6789, 10.0.0.2:6789 ; old\n"
        "[client]\n\tmon_host = 192.0.2.1\n"
    )
    assert read_mon_host(str(path)) == [("10.0.0.1", 6789), ("10.0.0.2", 6789)]


def test_read_mon_addr_sections_when_there_is_no_mon_host(tmp_path):
    path = tmp_path / "ceph.conf"
    path.write_text(
        "[global]\nfsid = 1\n[mon.a]\nmon addr = 10.0.0.1:6789\n[mon.b]\nmon_addr=10.0.0.2\n"
    )
    assert read_mon_host(str(path)) == [("10.0.0.1", 6789), ("10.0.0.2", None)]


@pytest.fixture
def rbd(make_conf, tmp_path):
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text("[global]\nmon_host = 10.0.0.1:6789,mon2,[2001:db8::1]:3300\n")

    def factory(fail=None, **libvirt_opts):
        options = {
            "images_type": "rbd",
            "images_rbd_pool": "vms",
            "images_rbd_ceph_conf": str(ceph_conf),
            "rbd_user": "nova",
            "rbd_secret_uuid": SECRET,
            **libvirt_opts,
        }
        runner = Recorder(fail)
        return Rbd(make_conf(libvirt=options), execute=runner), runner

    factory.ceph_conf = str(ceph_conf)
    return factory


def test_rbd_root_imports_then_resizes(rbd):
    backend, runner = rbd()
    disk = backend.create_root(f"/srv/instances/{UUID}/", "vda", BASE, 24 * MiB)

    auth = ["--id", "nova", "--conf", rbd.ceph_conf]
    assert runner.calls == [
        ["rbd", "import", *auth, "--image-format", "2", BASE.path, f"vms/{UUID}_disk"],
        ["rbd", "resize", *auth, "--size", "24M", f"vms/{UUID}_disk"],
    ]
    assert_xml_equal(
        f"""
        <disk type="network" device="disk">
          <driver name="qemu" type="raw"/>
          <source protocol="rbd" name="vms/{UUID}_disk">
            <host name="10.0.0.1" port="6789"/>
            <host name="mon2"/>
            <host name="2001:db8::1" port="3300"/>
          </source>
          <auth username="nova"><secret type="ceph" uuid="{SECRET}"/></auth>
          <target dev="vda" bus="virtio"/>
        </disk>""",
        disk.config.to_xml(),
    )
    facts = disk.facts
    assert (facts.source_type, facts.path, facts.size, facts.driver) == (
        "network",
        None,
        24 * MiB,
        "rbd",
    )
    assert facts.storage_kind is None and facts.aio_hint is None and not facts.preallocated
    assert disk.created == (f"vms/{UUID}_disk",)


def test_rbd_root_of_image_size_is_not_resized_and_explicit_hosts_win(rbd):
    backend, runner = rbd(rbd_user=None, rbd_secret_uuid=None, images_rbd_ceph_conf="")
    backend = Rbd(backend.conf, execute=runner, hosts=["192.0.2.7:6789", "192.0.2.8"])
    disk = backend.create_root(UUID, "vda", BASE)

    assert runner.calls == [["rbd", "import", "--image-format", "2", BASE.path, f"vms/{UUID}_disk"]]
    assert disk.config.source_hosts == ["192.0.2.7", "192.0.2.8"]
    assert disk.config.source_ports == [6789, None]
    assert disk.config.auth_username is None
    assert disk.facts.size == 8 * MiB


def test_rbd_blank_disk_rounds_up_to_mib(rbd):
    backend, runner = rbd()
    disk = backend.create_blank(UUID, "vdc", 10 * MiB + 1, "swap")
    assert runner.calls[0][-3:] == ["--size", "11M", f"vms/{UUID}_disk.swap"]
    assert runner.calls[0][:2] == ["rbd", "create"]
    assert disk.facts.size == 11 * MiB


def test_rbd_failed_resize_removes_the_image(rbd):
    backend, runner = rbd(fail={"rbd resize": "rbd: error: pool full"})
    with pytest.raises(exception.StorageError, match="pool full"):
        backend.create_root(UUID, "vda", BASE, 24 * MiB)
    assert runner.calls[-1] == [
        "rbd",
        "rm",
        "--id",
        "nova",
        "--conf",
        rbd.ceph_conf,
        f"vms/{UUID}_disk",
    ]


def test_rbd_failed_import_still_reports_the_import_error(rbd):
    backend, runner = rbd(
        fail={
            "rbd import": "rbd: import failed: (13) Permission denied",
            "rbd rm": "rbd: error opening image: (2) No such file or directory",
        }
    )
    with pytest.raises(exception.StorageError, match=r"rbd import.*Permission denied"):
        backend.create_root(UUID, "vda", BASE)
    assert [call[1] for call in runner.calls] == ["import", "rm"]


def test_rbd_destroy_skips_what_is_gone(rbd):
    backend, runner = rbd(fail={"rbd rm": "rbd: delete error: (2) No such file or directory"})
    assert backend.destroy([f"vms/{UUID}_disk"]) == []
    backend, runner = rbd()
    disk = backend.create_blank(UUID, "vdb", MiB)
    assert backend.destroy([disk, disk.config]) == [f"vms/{UUID}_disk.eph0"] * 2
    assert runner.calls[-1][:2] == ["rbd", "rm"]


def test_rbd_refuses_before_running_anything(rbd):
    backend, runner = rbd()
    qcow2 = CachedImage(BASE.path, "qcow2", 8 * MiB, created=False)
    with pytest.raises(exception.ImageUnacceptable, match="force_raw_images=True"):
        backend.create_root(UUID, "vda", qcow2)
    backend, runner = rbd(rbd_secret_uuid=None)
    with pytest.raises(exception.InvalidConfig, match="rbd_user and rbd_secret_uuid"):
        backend.create_blank(UUID, "vdb", MiB)
    backend, runner = rbd(images_rbd_ceph_conf="/nonexistent/ceph.conf")
    with pytest.raises(exception.InvalidConfig, match=r"/nonexistent/ceph\.conf does not exist"):
        backend.create_blank(UUID, "vdb", MiB)
    assert runner.calls == []


# LVM -----------------------------------------------------------------------------------


def test_lvm_needs_a_volume_group(make_conf):
    runner = Recorder()
    backend = Lvm(make_conf(libvirt={"images_type": "lvm"}), execute=runner)
    with pytest.raises(exception.InvalidConfig, match="images_volume_group"):
        backend.create_blank(UUID, "vdb", MiB)
    assert runner.calls == []


def test_lvcreate_failure_names_the_volume(make_conf, tmp_path):
    runner = Recorder(fail={"lvcreate --yes": '  Volume group "vg0" has insufficient free space'})
    conf = make_conf(libvirt={"images_volume_group": "vg0"})
    backend = Lvm(conf, execute=runner, dev_dir=str(tmp_path))
    with pytest.raises(exception.StorageError) as info:
        backend.create_root(f"/x/{UUID}", "vda", BASE, 16 * MiB)
    assert f"vg0/{UUID}_disk" in str(info.value) and "insufficient free space" in str(info.value)
    assert runner.calls == [
        ["lvcreate", "--yes", "-L", f"{16 * MiB}b", "-n", f"{UUID}_disk", "vg0"]
    ]


def test_lvm_destroy_refuses_devices_outside_its_group(make_conf, tmp_path):
    runner = Recorder()
    backend = Lvm(
        make_conf(libvirt={"images_volume_group": "vg0"}), execute=runner, dev_dir=str(tmp_path)
    )
    with pytest.raises(exception.StorageError, match="not a logical volume of"):
        backend.destroy(["/dev/sda"])
    assert backend.destroy([str(tmp_path / "vg0" / f"{UUID}_disk")]) == []  # already gone
    assert runner.calls == []


@pytest.mark.parametrize("kind", ["swap", "config"])
def test_blank_disk_arguments_are_checked_first(make_conf, tmp_path, kind):
    runner = Recorder()
    backend = Lvm(make_conf(libvirt={"images_volume_group": "vg0"}), execute=runner)
    fs = "ext4" if kind == "swap" else None
    with pytest.raises(exception.InvalidDiskConfig):
        backend.create_blank(UUID, "vdb", MiB, kind, fs_format=fs)
    with pytest.raises(exception.InvalidDiskConfig, match="must be positive"):
        backend.create_blank(UUID, "vdb", 0)
    assert runner.calls == []
