"""`probe` reports the versions of every layer: kernel, qemu-img, libvirt, QEMU."""

import json
import re

from nova_disk_tuning.cmd import main as cli


def _probe_json(tmp_path, capsys, uri):
    conf = tmp_path / "nova.conf"
    conf.write_text(f"[DEFAULT]\ninstances_path = {tmp_path}\n[libvirt]\nconnection_uri = {uri}\n")
    assert cli.main(["--config-file", str(conf), "probe", "--json", str(tmp_path)]) == 0
    return json.loads(capsys.readouterr().out)["host"]


def test_probe_reports_qemu_img_and_libvirt_versions(tmp_path, capsys):
    host = _probe_json(tmp_path, capsys, "test:///default")
    assert re.fullmatch(r"\d+\.\d+\.\d+", host["qemu-img"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", host["libvirt"])
    assert host["libvirt connection"] == "test:///default"
    # The test driver is no QEMU: say so rather than guess.
    assert host["QEMU"] == "unknown"
    assert host["io_uring for disks"].startswith("no:")


def test_unreachable_libvirt_is_reported_not_fatal(tmp_path, capsys):
    host = _probe_json(tmp_path, capsys, "qemu+unix:///system?socket=/nonexistent/sock")
    assert host["libvirt"].startswith("unreachable:")
    assert "qemu-img" in host
