"""KVM or TCG for ``bench guest``, and where its threads run (guest/cpu.py).

The probe is a stand-in here (booting a guest is the e2e suite's job:
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
    assert cpu.kvm_problem(plain) == f"{plain} is not a character device"
    # A character device that is not KVM: the ioctl is refused (ENOTTY).
    assert "does not answer KVM_GET_API_VERSION" in str(cpu.kvm_problem(Path("/dev/null")))


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
