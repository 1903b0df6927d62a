"""``destroy`` removes what the project made in an instance directory, and nothing else.

A file system mounted below ``<uuid>/`` keeps its files (destroy never crosses
a mount), a file someone else put there stays, a symlink is removed without
its target being touched; the directory goes only once nothing foreign is
left in it. Real spawns on libvirt's test driver, real tmpfs mounts.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.functional.conftest import MiB, requires_root
from tests.functional.test_spawn_faults import UUID, cli, write_conf

pytestmark = requires_root


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("destroy-image") / "small.raw"
    with open(path, "wb") as handle:
        handle.write(os.urandom(4 * MiB))
    return str(path)


def spawn(config: Path, image: str) -> Path:
    result = cli(config, "spawn", "vm", "--image", image, "--uuid", UUID, "--json")
    assert result.returncode == 0, result.stderr
    return config.parent / "instances" / UUID


def test_destroy_never_crosses_a_mount_nor_removes_what_it_did_not_make(tmp_path, image):
    config = write_conf(tmp_path, "none")
    directory = spawn(config, image)
    mount = directory / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        (mount / "precious").write_bytes(b"on another file system")
        (directory / "notes.txt").write_text("the operator's")
        target = tmp_path / "elsewhere"
        target.write_text("a symlink's target")
        os.symlink(target, directory / "kernel")  # a name of ours, as a link

        result = cli(config, "destroy", "vm")
        assert result.returncode == 0, result.stderr

        assert (mount / "precious").read_bytes() == b"on another file system"
        assert (directory / "notes.txt").read_text() == "the operator's"
        assert target.read_text() == "a symlink's target"
        assert not os.path.lexists(directory / "kernel")
        assert sorted(os.listdir(directory)) == ["mnt", "notes.txt"]
        listed = cli(config, "list", "--json")
        assert json.loads(listed.stdout) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_destroy_removes_the_directory_when_only_its_own_files_are_there(tmp_path, image):
    config = write_conf(tmp_path, "none")
    directory = spawn(config, image)
    assert cli(config, "destroy", "vm").returncode == 0
    assert not directory.exists()


@pytest.mark.parametrize("name", ["instance.json", "libvirt.xml"])
def test_a_fifo_in_place_of_a_record_is_listed_broken_not_waited_on(tmp_path, image, name):
    config = write_conf(tmp_path, "none")
    directory = spawn(config, image)
    (directory / name).unlink()
    os.mkfifo(directory / name)

    listed = cli(config, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["state"] == "broken" if name == "instance.json" else "FIFO" in row["state"], row
    shown = cli(config, "show", row["name"])
    assert shown.returncode == 1 and f"{name} cannot be read: it is a FIFO" in shown.stderr
    assert cli(config, "destroy", row["name"]).returncode == 0
    assert not directory.exists()
