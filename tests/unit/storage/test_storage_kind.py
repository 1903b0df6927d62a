"""What kind of storage a path is on: the one function behind the io_uring denylist."""

import os

import pytest

from nova_disk_tuning.storage import probe as probe_mod
from nova_disk_tuning.storage.probe import StorageProbe


@pytest.fixture
def sysfs(tmp_path, monkeypatch):
    """A stand-in /sys/dev/block: device 7:250 is a directory the test fills."""
    monkeypatch.setattr(probe_mod, "_BLOCK_SYSFS", str(tmp_path / "dev" / "{major}:{minor}"))
    (tmp_path / "dev").mkdir()

    def device(name: str, dm_uuid: str | None = None) -> int:
        real = tmp_path / "devices" / name
        (real / "dm").mkdir(parents=True)
        if dm_uuid is not None:
            (real / "dm" / "uuid").write_text(dm_uuid + "\n")
        (tmp_path / "dev" / "7:250").symlink_to(real)
        return os.makedev(7, 250)

    return device


def test_lvm_volume(sysfs):
    assert probe_mod.block_storage_kind(sysfs("dm-3", "LVM-k2Xz")) == "lvm"


def test_other_device_mapper_target_is_not_lvm(sysfs):
    assert probe_mod.block_storage_kind(sysfs("dm-4", "CRYPT-LUKS2-abc")) is None


def test_krbd(sysfs):
    assert probe_mod.block_storage_kind(sysfs("rbd0")) == "krbd"


def test_plain_device(sysfs):
    assert probe_mod.block_storage_kind(sysfs("loop3")) is None


@pytest.mark.parametrize(
    ("fs_type", "kind"),
    [("cifs", "cifs"), ("smb3", "cifs"), ("nfs4", "nfs"), ("ext4", None), ("tmpfs", None)],
)
def test_file_kind_from_the_file_system(tmp_path, monkeypatch, fs_type, kind):
    monkeypatch.setattr(probe_mod.mounts, "fs_type", lambda path, dev=None: fs_type)
    path = tmp_path / "disk"
    path.write_bytes(b"")
    assert StorageProbe().storage_kind(str(path)) == kind


def test_a_real_file_here_is_known(tmp_path):
    path = tmp_path / "disk"
    path.write_bytes(b"")
    probe = StorageProbe()
    expected = probe_mod.FS_STORAGE_KINDS.get(probe.fs_type(str(path)))
    assert probe.storage_kind(str(path)) == expected


def test_a_mount_point_in_another_encoding_is_read_not_refused(tmp_path):
    """A Latin-1 mount point anywhere on the host once broke every probe (UnicodeDecodeError)."""
    from nova_disk_tuning.common import mounts

    table = tmp_path / "mountinfo"
    table.write_bytes(
        b"22 1 254:0 / / rw - ext4 /dev/vda rw\n"
        b"30 22 0:40 / /srv/caf\xe9 rw - tmpfs tmpfs rw\n"
        b"31 22 0:41 / " + os.fsencode(str(tmp_path)) + b"/with\\040space rw - xfs /dev/loop0 rw\n"
    )
    (tmp_path / "with space").mkdir()
    assert mounts.fs_type(str(tmp_path / "with space"), mountinfo=str(table)) == "xfs"
    assert mounts.fs_type("/srv/caf\udce9/x", mountinfo=str(table)) == "tmpfs"
    assert mounts.fs_type("/elsewhere", mountinfo=str(table)) == "ext4"
