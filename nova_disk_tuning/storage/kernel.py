"""Facts about the running kernel that the tuning policy and `probe` report."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os

from nova_disk_tuning.common.libc import libc

# io_uring_setup(2) is syscall 425 on every architecture that has it
# (the io_uring syscalls were numbered from the unified table, Linux 5.1).
NR_IO_URING_SETUP = 425
IO_URING_DISABLED = "/proc/sys/kernel/io_uring_disabled"


@dataclasses.dataclass(frozen=True)
class IoUringSupport:
    usable: bool
    reason: str


def kernel_release() -> str:
    return os.uname().release


def _disabled_setting() -> int | None:
    # Linux 6.6 added the sysctl: 0 enabled, 1 only for io_uring_group,
    # 2 disabled for everyone. Older kernels have no file.
    try:
        with open(IO_URING_DISABLED) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def io_uring_support() -> IoUringSupport:
    """Ask the kernel: create (and close) a one-entry ring with io_uring_setup.

    Seccomp filters (containers) and the sysctl both answer EPERM/ENOSYS
    here, so a real call is the only reliable answer; the sysctl only
    explains it.
    """
    setting = _disabled_setting()
    syscall = libc().syscall
    syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = syscall(ctypes.c_long(NR_IO_URING_SETUP), ctypes.c_uint(1), params)
    if fd >= 0:
        os.close(fd)
        return IoUringSupport(True, f"io_uring_setup works (io_uring_disabled={setting})")
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        reason = "the kernel has no io_uring (ENOSYS), or a seccomp filter hides it"
    elif err == errno.EPERM and setting:
        reason = f"disabled by {IO_URING_DISABLED}={setting} (EPERM)"
    elif err == errno.EPERM:
        reason = "not permitted (EPERM), e.g. by a seccomp filter"
    else:
        reason = f"io_uring_setup failed: {os.strerror(err)} ({errno.errorcode.get(err, err)})"
    return IoUringSupport(False, reason)
