"""The storage commands end to end through main(), on the test's directory."""

from __future__ import annotations

import json
import os

from nova_disk_tuning.cmd import main as cli


def _run(capsys, *argv):
    status = cli.main(["--config-file", os.devnull, *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_probe_json(tmp_path, capsys):
    disk = tmp_path / "disk"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    status, out, _ = _run(capsys, "probe", str(tmp_path), str(disk), "--json")
    assert status == 0
    data = json.loads(out)
    assert {"kernel", "io_uring"} <= data["host"].keys()
    directory, file = data["paths"]
    assert directory["path"] == str(tmp_path) and directory["allocation"] is None
    assert set(directory["fallocate_modes"]) <= {"zero_range", "punch_hole", "allocate"}
    assert file["allocation"] == {"size": 1 << 20, "allocated": 0, "fully_allocated": False}


def test_probe_table(tmp_path, capsys):
    status, out, _ = _run(capsys, "probe", str(tmp_path))
    assert status == 0
    assert "O_DIRECT" in out and "io_uring" in out and os.uname().release in out


def test_probe_missing_path_is_one_line(tmp_path, capsys):
    status, out, err = _run(capsys, "probe", str(tmp_path / "absent"))
    assert status == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "absent" in lines[0] and "does not exist" in lines[0]


def test_probe_defaults_to_instances_path(tmp_path, capsys):
    conf = tmp_path / "nova.conf"
    conf.write_text(f"[DEFAULT]\ninstances_path = {tmp_path}/instances\n")
    status = cli.main(["--config-file", str(conf), "probe"])
    err = capsys.readouterr().err
    assert status == 1 and "instances_path" in err and f"{tmp_path}/instances" in err
    os.mkdir(tmp_path / "instances")
    assert cli.main(["--config-file", str(conf), "probe", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["paths"][0]["path"] == f"{tmp_path}/instances"


def test_zero_json(tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.write_bytes(b"\xff" * (2 << 20))
    status, out, _ = _run(capsys, "zero", str(disk), "--offset", "1M", "--length", "512K", "--json")
    assert status == 0
    data = json.loads(out)
    assert data["bytes"] == 512 << 10 and data["method"] and data["seconds"] >= 0
    content = disk.read_bytes()
    assert content[1 << 20 : (1 << 20) + (512 << 10)] == bytes(512 << 10)
    assert content[: 1 << 20] == b"\xff" * (1 << 20)


def test_zero_text_and_bad_size(tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.write_bytes(b"\xff" * 8192)
    status, out, _ = _run(capsys, "zero", str(disk))
    assert status == 0 and "Zeroed 8192 bytes" in out
    status, _, err = _run(capsys, "zero", str(disk), "--length", "lots")
    assert status == 1 and len(err.strip().splitlines()) == 1 and "--length" in err


def test_preallocate_json(tmp_path, capsys):
    disk = tmp_path / "disk"
    status, out, _ = _run(capsys, "preallocate", str(disk), "--size", "4M", "--json")
    assert status == 0
    data = json.loads(out)
    assert data["size"] == 4 << 20 and data["method"] in ("fallocate", "none")
    assert os.stat(disk).st_size == 4 << 20
    if data["allocated"]:
        assert os.stat(disk).st_blocks * 512 >= 4 << 20


def test_preallocate_keep_size(tmp_path, capsys):
    disk = tmp_path / "overlay"
    disk.write_bytes(b"q" * 4096)
    status, out, _ = _run(capsys, "preallocate", str(disk), "--size", "1M", "--keep-size")
    assert status == 0 and str(disk) in out
    assert os.stat(disk).st_size == 4096
