"""KVM or TCG for ``bench guest``, and where its threads run (guest/cpu.py).

The probe and libvirt are stand-ins here (booting a guest is the e2e suite's job:
tests/e2e/test_bench_guest_accel.py); the device checks run on real files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nova_disk_tuning_bench.guest import cpu
from nova_disk_tuning_bench.guest.errors import GuestBenchError, GuestRunError


def _never() -> float:
    raise AssertionError("the probe must not run")


def _hangs() -> float:
    raise GuestRunError("a probe guest did not reach its init within 15 s under KVM")


def test_qemu_is_taken_as_asked_without_probing():
    accel = cpu.choose("qemu", _never, check=lambda: pytest.fail("no check either"))
    assert (accel.virt_type, accel.name) == ("qemu", "TCG")


def test_auto_without_a_kvm_device_falls_back_and_says_why():
    accel = cpu.choose("auto", _never, check=lambda: "/dev/kvm: No such file or directory")
    assert accel.virt_type == "qemu"
    assert accel.line() == (
        "guests ran under TCG (qemu): KVM does not work here: /dev/kvm: No such file or directory"
    )


def test_auto_falls_back_when_the_probe_hangs():
    accel = cpu.choose("auto", _hangs, check=lambda: None)
    assert accel.virt_type == "qemu" and "did not reach its init within 15 s" in accel.reason


def test_auto_takes_kvm_when_the_probe_boots():
    accel = cpu.choose("auto", lambda: 1.23, check=lambda: None)
    assert accel.virt_type == "kvm" and accel.reason.endswith("in 1.2 s under KVM")


def test_kvm_refuses_in_one_line_where_it_does_not_work():
    for check, probe in ((lambda: "/dev/kvm: Permission denied", _never), (lambda: None, _hangs)):
        with pytest.raises(GuestBenchError) as caught:
            cpu.choose("kvm", probe, check=check)
        message = str(caught.value)
        assert message.startswith("bench guest: --virt-type kvm: ") and "\n" not in message
        assert message.endswith("use --virt-type auto or qemu to measure under TCG")


def test_an_unknown_virt_type_is_refused():
    with pytest.raises(GuestBenchError, match="use one of auto, kvm, qemu"):
        cpu.choose("xen", _never)


def test_kvm_problem_of_files_that_are_not_kvm(tmp_path: Path):
    assert "No such file" in str(cpu.kvm_problem(tmp_path / "kvm"))
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to("/dev/null")
    # None of them is opened: a FIFO, a file, another character device.
    for path in (plain, fifo, link, Path("/dev/null")):
        assert cpu.kvm_problem(path) == f"{path} is not the KVM device (character device 10:232)"


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm on this host")
def test_kvm_problem_of_the_real_device():
    # The device answers the API version even where a guest kernel then hangs.
    problem = cpu.kvm_problem()
    assert problem is None or "Permission denied" in problem


def test_pin_plan_repeats_and_spreads():
    plan = cpu.pin_plan([0, 1, 2, 3], vcpus=2, iothreads=2)
    assert plan.vcpus == {0: [0], 1: [1]}
    assert plan.iothreads == {1: [3], 2: [2]} and plan.emulator == [3]
    assert cpu.pin_plan([0, 1, 2, 3], 2, 2) == plan
    shared = cpu.pin_plan([0, 1], vcpus=4, iothreads=3)
    assert shared.vcpus == {0: [0], 1: [1], 2: [0], 3: [1]}
    assert shared.iothreads == {1: [1], 2: [0], 3: [1]}
    with pytest.raises(ValueError):
        cpu.pin_plan([], 1, 0)


def test_host_cpus_are_this_process_affinity():
    assert cpu.host_cpus() == sorted(os.sched_getaffinity(0))


class _Domain:
    """A libvirt domain stand-in: active until destroyed (booting is the e2e suite's)."""

    def __init__(self) -> None:
        self.active = True

    def isActive(self) -> bool:
        return self.active

    def destroy(self) -> None:
        self.active = False

    def undefine(self) -> None:
        import libvirt

        raise libvirt.libvirtError("transient")  # as libvirt refuses a transient domain


class _Conn:
    def __init__(self) -> None:
        self.domains: list[_Domain] = []
        self.xml = ""

    def createXML(self, xml: str, flags: int) -> _Domain:
        self.xml = xml
        self.domains.append(_Domain())
        return self.domains[-1]


def _kit(tmp_path: Path):
    from nova_disk_tuning_bench.guest.kit import GuestKit

    return GuestKit("k", tmp_path, tmp_path / "vmlinuz", tmp_path / "initrd", "6.1", (), "fio")


def test_a_probe_that_hangs_is_destroyed_and_says_so(tmp_path: Path):
    pytest.importorskip("libvirt")
    from nova_disk_tuning_bench.guest import boot

    conn, console_log = _Conn(), tmp_path / "probe.log"
    console_log.write_text("[ 0.1] Linux version 6.1\n")
    with pytest.raises(GuestRunError, match="did not reach its init within 0 s under KVM"):
        boot.probe_kvm(conn, _kit(tmp_path), "p", console_log, tmp_path / "q.log", timeout=0.3)
    assert not conn.domains[0].active
    assert 'type="kvm"' in conn.xml or "type='kvm'" in conn.xml
    assert f'<memory unit="KiB">{cpu.PROBE_MEMORY_MB * 1024}</memory>' in conn.xml


def test_a_probe_that_boots_gives_its_seconds(tmp_path: Path):
    pytest.importorskip("libvirt")
    from nova_disk_tuning_bench.guest import boot

    conn, console_log = _Conn(), tmp_path / "probe.log"
    console_log.write_text("NDT-BOOT k\n")
    seconds = boot.probe_kvm(conn, _kit(tmp_path), "p", console_log, tmp_path / "q.log")
    assert 0 <= seconds < cpu.PROBE_TIMEOUT and not conn.domains[0].active


def test_a_report_made_before_virt_type_says_tcg():
    from nova_disk_tuning_bench.guest import report

    assert report.accel_line({"vcpus": 2}) == (
        "guests under TCG (bench guest ran every guest under TCG then); not pinned"
    )
    now = {
        "accel": "KVM",
        "accel_reason": "a probe guest reached its init in 0.9 s",
        "pinned": True,
    }
    assert report.caption({"guest": now}) == (
        "guests under KVM (a probe guest reached its init in 0.9 s); vCPUs and IOThreads pinned"
    )
