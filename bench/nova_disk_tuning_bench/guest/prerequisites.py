"""What a private libvirtd with the QEMU driver needs on this host, checked or made."""

from __future__ import annotations

import grp
import pwd
import shutil
import subprocess
from pathlib import Path

from oslo_log import log as logging

from nova_disk_tuning_bench.guest.errors import LibvirtdError

LOG = logging.getLogger(__name__)

DRIVER_DIRS = (
    "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver",
    "/usr/lib64/libvirt/connection-driver",
    "/usr/lib/libvirt/connection-driver",
)


def ensure_qemu_identities() -> None:
    """Create user libvirt-qemu and groups libvirt-qemu and kvm if missing.

    Debian's libvirtd 9.0 resolves its compiled-in QEMU user and group (both
    ``libvirt-qemu``) while initialising the QEMU driver, before it reads
    ``user``/``group`` from qemu.conf, and fails the driver if either is missing
    ("Failed to parse group 'libvirt-qemu'"). The package's postinst normally creates
    them, with ``kvm`` as a supplementary group.
    """
    for group in ("kvm", "libvirt-qemu"):
        try:
            grp.getgrnam(group)
        except KeyError:
            LOG.warning("creating system group %r (libvirtd's QEMU driver requires it)", group)
            _create_identity(["groupadd", "--system", group])
            grp.getgrnam(group)
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        LOG.warning("creating system user 'libvirt-qemu' (libvirtd's QEMU driver requires it)")
        _create_identity(
            ["useradd", "--system", "--gid", "libvirt-qemu", "--groups", "kvm",
             "--no-create-home", "--home-dir", "/var/lib/libvirt",
             "--shell", "/usr/sbin/nologin", "libvirt-qemu"]
        )  # fmt: skip
        pwd.getpwnam("libvirt-qemu")


def _create_identity(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    # Exit code 9 means "already exists": another process was faster.
    if proc.returncode not in (0, 9):
        raise LibvirtdError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def require_binaries() -> None:
    missing = [b for b in ("libvirtd", "virtlogd", "unshare", "mount", "qemu-system-x86_64")
               if shutil.which(b) is None]  # fmt: skip
    if missing:
        raise LibvirtdError(
            "missing: " + ", ".join(missing) + ". Install the Debian "
            "packages in bindep.txt (libvirt-daemon libvirt-daemon-driver-qemu "
            "qemu-system-x86 util-linux)."
        )


def qemu_driver_module() -> Path:
    for d in DRIVER_DIRS:
        candidate = Path(d) / "libvirt_driver_qemu.so"
        if candidate.exists():
            return candidate
    raise LibvirtdError(
        "libvirt's QEMU driver module (libvirt_driver_qemu.so) is not installed: "
        "apt-get install libvirt-daemon-driver-qemu"
    )


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path}: not readable)"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])
