"""``bench guest --virt-type``: KVM where it works, TCG with the reason otherwise.

Where this suite is developed ``/dev/kvm`` exists but a guest kernel hangs
under it, so ``auto`` takes the fall-back after the probe (the ``--quick``
test in test_bench_guest.py) and ``kvm`` refuses in one line; on a KVM
host the same tests see KVM. "A host without /dev/kvm" is made for real: a
mount namespace where an empty file is bound over the device node.
"""

from __future__ import annotations

import json
import subprocess

from nova_disk_tuning_bench.guest import cpu

from tests.e2e.test_bench_guest import _root, bench_guest, short_path  # noqa: F401 (fixture)

# One guest, one short job: what is under test is the accelerator, not a speed.
TINY = (
    "--quick", "--layouts", "raw-prealloc", "--variants", "pick", "--jobs", "randread-4k-qd32",
    "--repeat", "1", "--runtime", "1", "--ramp", "0", "--no-host-bound", "--json",
)  # fmt: skip


def test_without_dev_kvm_the_run_says_tcg_and_why(short_path):  # noqa: F811
    hidden = short_path / "not-kvm"
    hidden.write_bytes(b"")
    command = bench_guest(short_path, *TINY)
    if cpu.KVM_DEVICE.exists():
        # The bind mount lives and dies with the namespace: the host's node is untouched.
        script = f'mount --bind "$1" {cpu.KVM_DEVICE} && shift && exec "$@"'
        command = ["unshare", "--mount", "--propagation", "private",
                   "sh", "-c", script, "sh", str(hidden), *command]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    guest = json.loads(proc.stdout)["guest"]
    assert guest["virt_type"] == "qemu" and guest["accel"] == "TCG"
    assert guest["accel_reason"].startswith("KVM does not work here: /dev/kvm")
    assert f"guests ran under TCG (qemu): {guest['accel_reason']}" in proc.stderr


def test_kvm_forced_runs_under_kvm_or_refuses_in_one_line(short_path):  # noqa: F811
    proc = subprocess.run(
        bench_guest(short_path, *TINY, "--virt-type", "kvm"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:
        assert json.loads(proc.stdout)["guest"]["virt_type"] == "kvm"
        return
    # Where KVM does not work (here: the guest hangs): one line, nothing measured.
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "--virt-type kvm: " in errors[0]
    assert "use --virt-type auto or qemu to measure under TCG" in errors[0]
    assert not list((short_path / "out").glob("results.json"))
