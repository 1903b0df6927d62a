"""The one-box's parts that run without root or Nova: the guest's contract, the
bookkeeping of what each disk holds, the Neutron stand-in, the process records,
the work directory and the api-paste rewrite. The whole box runs in tests/onebox."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import pytest
from nova_disk_tuning_bench.guest import console
from nova_disk_tuning_bench.onebox import box, guests, infra, neutron_standin, nova, procs
from nova_disk_tuning_bench.onebox.guests import Boot, Contents, DiskView
from nova_disk_tuning_bench.onebox.procs import OneboxError, Services


def test_a_guest_that_stays_up_and_one_booted_without_our_command_line():
    line = guests.guest_cmdline()
    assert "ndt.stay=1" in line.split() and "ndt.sums=vda:1:1,vdb:1:1" in line.split()
    report = console.parse_console("[ 1.0] x\nNDT-IDLE\n")
    assert report.idle and not report.done


def _boot(step, disks, results=None, sums=None, idle=False):
    report = console.GuestReport(done=not idle, idle=idle)
    report.results = results if results is not None else {t: "ok" for t in disks}
    report.sums = {(t, 1, 1): md5 for t, md5 in (sums or {}).items()}
    views = [DiskView(t, f"/i/x/{f}", {}, None, None, None) for t, f in disks.items()]
    return Boot(step, report, "<domain/>", views)


def test_contents_follow_each_file_whatever_it_is_attached_as():
    contents = Contents()
    normal = {"vda": "disk", "vdb": "disk.eph0"}
    assert contents.check(_boot("boot", normal)) == []  # new disks: nothing to compare
    kept = {"vda": guests.pattern_md5("vda"), "vdb": guests.pattern_md5("vdb")}
    assert contents.check(_boot("reboot", normal, sums=kept)) == []
    # Rescue: nothing written, nothing checked.
    rescue = {"vda": "disk.rescue", "vdb": "disk"}
    assert contents.check(_boot("rescue", rescue, results={}, idle=True)) == []
    # The root disk attached as vdb must still hold what vda wrote.
    moved = {"vda": guests.pattern_md5("vda"), "vdb": guests.pattern_md5("vdb")}
    problems = contents.check(_boot("moved", rescue, sums=moved))
    assert problems == ["moved: vdb (disk) does not hold what vda wrote last"]


def test_contents_report_a_disk_the_guest_could_not_write_or_lost():
    contents = Contents()
    normal = {"vda": "disk", "vdb": "disk.local"}
    contents.check(_boot("boot", normal))
    lost = {"vda": guests.pattern_md5("vda"), "vdb": "0" * 32}
    problems = contents.check(_boot("resize", normal, results={"vda": "fail compare"}, sums=lost))
    assert problems == [
        "resize: vda fail compare",
        "resize: vdb no result",
        "resize: vdb (disk.local) does not hold what vdb wrote last",
    ]
    contents.forget("disk.local")
    # A new ephemeral disk (unshelve): only the root disk is compared.
    assert contents.check(_boot("unshelve", normal, sums={"vda": guests.pattern_md5("vda")})) == []


@pytest.fixture
def standin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), neutron_standin.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_neutron_stand_in_lists_nothing_and_makes_nothing(standin, capsys):
    with urllib.request.urlopen(standin + "/v2.0/ports?device_id=abc&fields=id") as answer:
        assert json.load(answer) == {"ports": []}
    with urllib.request.urlopen(standin + "/v2.0/extensions.json") as answer:
        assert json.load(answer) == {"extensions": []}
    request = urllib.request.Request(standin + "/v2.0/ports", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 404


def test_nova_api_paste_loses_only_authtoken(tmp_path):
    source = tmp_path / "api-paste.ini"
    source.write_text(
        "keystone = cors faultwrap authtoken keystonecontext app\n[filter:authtoken]\n"
    )
    target = nova.api_paste(source, tmp_path / "out.ini")
    assert (
        target.read_text() == "keystone = cors faultwrap keystonecontext app\n[filter:authtoken]\n"
    )
    source.write_text("keystone = cors app\n")
    with pytest.raises(OneboxError, match="no 'authtoken keystonecontext' pipeline"):
        nova.api_paste(source, tmp_path / "out.ini")


def _wait_for(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_reap_ends_a_recorded_session_and_a_marked_daemon_but_not_a_reused_pid(tmp_path):
    services = Services(tmp_path)
    ready = tmp_path / "ready"
    # A service whose environment lost the mark (as a process title overwrites
    # it) is found by its recorded session; its child that left the session
    # (as epmd does) by the mark it kept.
    script = (
        "import os, subprocess, sys, time\n"
        f"env = dict(os.environ, {procs.MARK}={str(tmp_path)!r})\n"
        "code = 'import os, time; os.setsid(); time.sleep(600)'\n"
        "subprocess.Popen([sys.executable, '-c', code], env=env)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(600)\n"
    )
    services.start("svc", ["env", "-u", procs.MARK, sys.executable, "-c", script])
    _wait_for(ready)
    # A process of someone else whose pid a stale record names: a different start time.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (tmp_path / "pids" / "stale").write_text(f"{other.pid} 1\n")
        ended = procs.reap(tmp_path, timeout=5)
        assert services.running["svc"].pid in ended and len(ended) == 2
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
        services.stop_all()


def test_stop_all_ends_the_services_in_reverse_and_what_they_left(tmp_path):
    services = Services(tmp_path)
    services.start("a", ["sleep", "600"])
    services.start("b", ["sleep", "600"])
    services.stop_all()
    assert services.running == {}
    assert procs.reap(tmp_path) == []


def test_a_service_that_died_is_reported_with_its_log(tmp_path):
    services = Services(tmp_path)
    services.start("dies", ["sh", "-c", "echo cannot bind; exit 3"])
    with pytest.raises(
        OneboxError, match=r"dies exited with status 3: see .*dies.log\ncannot bind"
    ):
        services.wait("dies", lambda: False, timeout=30, what="ready")


def test_the_work_directory_is_emptied_only_if_a_run_made_it(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data").write_text("keep")
    with pytest.raises(OneboxError, match="not made by a one-box run"):
        box._clear(foreign)
    assert (foreign / "data").read_text() == "keep"
    ours = tmp_path / "ours"
    box._clear(ours)
    (ours / "instances").mkdir()
    (ours / "instances" / "disk").write_text("x")
    os.symlink("/etc", ours / "link")
    box._clear(ours)
    assert sorted(p.name for p in ours.iterdir()) == [box.MARKER]
    assert os.path.exists("/etc/hostname") or os.path.isdir("/etc")


ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_every_program_the_box_runs_comes_from_bindeps_onebox_profile():
    profiles = {}
    for line in (ROOT / "bindep.txt").read_text().splitlines():
        match = re.match(r"^([a-z0-9.+-]+) \[platform:dpkg ?([^\]]*)\]", line)
        if match:
            profiles[match.group(1)] = set(match.group(2).split())
    for program, package in infra.PACKAGES.items():
        assert "onebox" in profiles.get(package, set()), (program, package)
    for package in ("qemu-system-x86", "libvirt-daemon", "libvirt-daemon-driver-qemu", "kmod"):
        assert "onebox" in profiles[package], package
    # make nova-demo and make onebox install that profile and the Python side first.
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP_ONEBOX\):.*\n((?:\t.*\n)+)", makefile, re.M)
    assert stamp and "--profile onebox" in stamp.group(1)
    assert "-r onebox-requirements.txt" in stamp.group(1)
    for target in ("nova-demo", "onebox"):
        assert re.search(rf"^{target}: \$\(STAMP_ONEBOX\)", makefile, re.M), target


DOMAIN = """<domain><iothreads>2</iothreads><devices>
<disk type="file" device="disk"><driver name="qemu" type="qcow2" cache="none" io="native"
 iothread="1"/><source file="/i/SERVER/disk"/><target dev="vda" bus="virtio"/></disk>
</devices></domain>"""


def test_the_report_shows_both_drivers_the_xml_and_the_drop_ins_reasons(tmp_path, capsys):
    from nova_disk_tuning_bench.onebox import lifecycle, report

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "nova-compute-dropin.log").write_text(
        "2026-12-02 INFO nova_disk_tuning.nova.tune [req] [instance: SERVER] "
        "Disk vda: cache=none (O_DIRECT works); io=native (preallocated)\n"
    )
    outcomes = []
    for name, driver in (("nova", nova.NOVA_DRIVER), ("dropin", nova.DROPIN_DRIVER)):
        compute = nova.Compute(name, driver, "uri", tmp_path / f"instances-{name}")
        view = DiskView("vda", "/i/SERVER/disk", {"cache": "none"}, "native", True, None)
        outcome = lifecycle.Outcome(compute, server_id="SERVER", snapshot_pattern_ok=True)
        outcome.boots.append(Boot("boot", console.GuestReport(done=True), DOMAIN, [view]))
        outcome.seconds["boot"] = 4.2
        outcomes.append(outcome)
    assert (
        report.reasons(outcomes[1], "vda")
        == "cache=none (O_DIRECT works); io=native (preallocated)"
    )
    report.print_report(outcomes, ["nova-api.log: a WARNING line"])
    out = capsys.readouterr().out
    for text in ("libvirt.LibvirtDriver", "disk_tuning.LibvirtDriver", "io=native (preallocated)",
                 'iothread="1"', "4.2", "LOG nova-api.log: a WARNING line"):  # fmt: skip
        assert text in out, text
    assert not report.all_held(outcomes, ["a line"]) and report.all_held(outcomes, [])
