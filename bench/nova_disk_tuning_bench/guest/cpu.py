"""Where the guests of a bench run execute: under KVM or TCG, and on which host CPUs.

``--virt-type auto`` (the default) measures under KVM where KVM works: the
device must answer ``KVM_GET_API_VERSION`` and a probe guest booted as
``<domain type='kvm'>`` must reach its init within :data:`PROBE_TIMEOUT`.
Otherwise the run falls back to TCG (``type='qemu'``) and says why in one
line, which the report, ``--json`` and the charts carry. On the machines
this project is tested on ``/dev/kvm`` exists but a guest kernel hangs
under it (nested virtualisation does not work there): the probe is what
tells that host from an operator's.

Pinning keeps repetitions comparable: every boot places its vCPUs, its
IOThreads and QEMU's main loop on the same host CPUs (:func:`pin_plan`),
so a cell never wins because the scheduler happened to spread it better.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from nova_disk_tuning_bench.guest.errors import GuestBenchError, GuestRunError

KVM_DEVICE = Path("/dev/kvm")
VIRT_TYPES = ("auto", "kvm", "qemu")
# _IO(KVMIO=0xAE, 0x00) in <linux/kvm.h>; every KVM since Linux 2.6.22 answers 12.
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
# The misc device number the kernel gives /dev/kvm (MISC_DYNAMIC_MINOR is not used for it).
KVM_NODE = (10, 232)
# The probe's memory, whatever --memory says: enough for the kit's initramfs
# (rootfstype=ramfs, about 85 MiB of fio and its libraries), so a small
# --memory cannot make KVM look broken.
PROBE_MEMORY_MB = 256
# The kit reaches its init in about 1 s under KVM and in 5-15 s under TCG
# (measured here); a guest that hangs under KVM never does. Every run on a
# host where KVM hangs pays this once.
PROBE_TIMEOUT = 15.0


@dataclasses.dataclass(frozen=True)
class Accel:
    """The domain type the guests get, and why."""

    virt_type: str  # libvirt's <domain type>: "kvm" or "qemu"
    reason: str

    @property
    def name(self) -> str:
        return "KVM" if self.virt_type == "kvm" else "TCG"

    def line(self) -> str:
        return f"guests ran under {self.name} ({self.virt_type}): {self.reason}"


def kvm_problem(device: Path = KVM_DEVICE) -> str | None:
    """Why ``device`` is not a usable KVM device, or None.

    Only the KVM node (character device 10:232) is ever opened: opening
    whatever else a hostile or broken ``/dev/kvm`` names could arm a hardware
    watchdog or take a terminal. The number is checked again on the open
    descriptor, which is the one the ioctl then asks.
    """
    try:
        found = os.stat(device)
    except OSError as exc:
        return f"{device}: {exc.strerror}"
    if not _is_kvm_node(found):
        return f"{device} is not the KVM device (character device {KVM_NODE[0]}:{KVM_NODE[1]})"
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        return f"{device}: {exc.strerror}"
    try:
        if not _is_kvm_node(os.fstat(fd)):
            return f"{device} changed while it was checked"
        try:
            version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        except OSError as exc:
            return f"{device} does not answer KVM_GET_API_VERSION ({exc.strerror})"
        if version != KVM_API_VERSION:
            return f"{device} speaks KVM API {version}, not {KVM_API_VERSION}"
        return None
    finally:
        os.close(fd)


def _is_kvm_node(found: os.stat_result) -> bool:
    rdev = (os.major(found.st_rdev), os.minor(found.st_rdev))
    return stat.S_ISCHR(found.st_mode) and rdev == KVM_NODE


def choose(
    requested: str,
    probe: Callable[[], float],
    check: Callable[[], str | None] = kvm_problem,
) -> Accel:
    """The accelerator for ``--virt-type requested``.

    ``check`` says why the KVM device is unusable (None: it answers);
    ``probe`` boots a guest under KVM and returns its seconds to init, or
    raises GuestRunError saying why it did not get there. ``kvm`` refuses
    (GuestBenchError) where ``auto`` falls back to TCG.
    """
    if requested not in VIRT_TYPES:
        raise GuestBenchError(reason=f"--virt-type {requested}: use one of {', '.join(VIRT_TYPES)}")
    if requested == "qemu":
        return Accel("qemu", "asked for with --virt-type qemu")
    problem = check()
    if problem is None:
        try:
            seconds = probe()
        except GuestRunError as exc:
            problem = str(exc)
        else:
            return Accel("kvm", f"a probe guest reached its init in {seconds:.1f} s under KVM")
    if requested == "kvm":
        raise GuestBenchError(
            reason=f"--virt-type kvm: {problem}; use --virt-type auto or qemu to measure under TCG"
        )
    return Accel("qemu", f"KVM does not work here: {problem}")


@dataclasses.dataclass(frozen=True)
class Pins:
    """Host CPUs for each vCPU, each IOThread id, and QEMU's main loop."""

    vcpus: dict[int, list[int]]
    iothreads: dict[int, list[int]]
    emulator: list[int]


def host_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    return sorted(os.sched_getaffinity(0))


def pin_plan(cpus: Sequence[int], vcpus: int, iothreads: int) -> Pins:
    """One host CPU per vCPU from the first, IOThreads and QEMU's loop from the last.

    With fewer host CPUs than threads they share round-robin, the same way at
    every boot: what matters for comparing cells is that the placement repeats.
    """
    if not cpus:
        raise ValueError("no host CPU to pin to")
    count = len(cpus)
    return Pins(
        vcpus={vcpu: [cpus[vcpu % count]] for vcpu in range(vcpus)},
        iothreads={n: [cpus[(count - n) % count]] for n in range(1, iothreads + 1)},
        emulator=[cpus[-1]],
    )
