"""A private libvirtd (QEMU driver) and virtlogd, run as root, for the in-guest bench and e2e.

libvirtd running as root ignores ``XDG_*`` and uses compiled-in paths:
``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and
``/var/cache/libvirt``; only libvirtd.conf can be moved (``--config``), qemu.conf
cannot. So the daemons run in a private mount namespace (``unshare --mount``) where
each of those directories is a bind mount of a directory under a base directory the
caller chooses (the capabilities cache excepted: see ``DEFAULT_CAPS_CACHE``). Their
pid files are moved into the private run directory. Nothing the daemons or their
QEMU processes write lands in a system-wide path (missing mount points are created
empty, where the libvirt-daemon package would have them), a system libvirtd is
neither seen nor disturbed, and several private daemons can run at once.
libvirtd runs with ``--timeout 60`` while its owner holds a connection, so a daemon
orphaned by a killed owner exits by itself once idle; the pid files let the next
owner end it sooner (:func:`~nova_disk_tuning_bench.guest.procs.reap_pidfiles`).
Clients reach the daemon through the socket under the base directory:
``qemu+unix:///system?socket=<base>/run/libvirt-sock``.

Only the QEMU connection driver is loaded (``LIBVIRT_DRIVER_DIR`` points at a
directory holding just that module), so the network, nwfilter, LXC, ... drivers
cannot start dnsmasq or touch the firewall.

Under the base directory (paths as the daemons see them in brackets)::

    etc/    [/etc/libvirt]      libvirtd.conf, qemu.conf, virtlogd.conf
    run/    [/run/libvirt]      libvirt-sock, libvirtd.pid, virtlogd.pid, qemu/<domain>.pid
    lib/    [/var/lib/libvirt]
    log/    [/var/log/libvirt]  libvirtd.log, virtlogd.log, qemu/<domain>.log
    (DEFAULT_CAPS_CACHE, or cache/)  [/var/cache/libvirt]  QEMU capabilities
    daemons.log                 stdout/stderr of the namespace's processes
    supervisor.pid              the namespace's first process
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from oslo_log import log as logging

from nova_disk_tuning.common.versions import format_version, version_from_int
from nova_disk_tuning.host import quiet_libvirt
from nova_disk_tuning_bench.guest import stacks
from nova_disk_tuning_bench.guest.errors import LibvirtdError
from nova_disk_tuning_bench.guest.prerequisites import (
    ensure_qemu_identities,
    qemu_driver_module,
    require_binaries,
    tail,
)
from nova_disk_tuning_bench.guest.procs import kill_and_wait, live_group_members, pid_from

if TYPE_CHECKING:
    import libvirt

LOG = logging.getLogger(__name__)

# Shared by private daemons only (see PrivateLibvirtd.cache); never the system's cache.
DEFAULT_CAPS_CACHE = Path("/var/cache/nova-disk-tuning/libvirt-cache")
# sun_path of a unix socket holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107


LIBVIRTD_CONF = """\
# A private daemon: local unix sockets only, no authentication.
listen_tls = 0
listen_tcp = 0
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

QEMU_CONF = """\
# QEMU runs as root with no relabelling: the owner made every image it hands over.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
# No cgroups and no per-domain /dev namespace: both depend on how the host was
# booted, and without them QEMU opens /dev/kvm as the root it runs as; pinning
# (<cputune>) is then done with sched_setaffinity, within the daemon's affinity.
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "logd"
"""

VIRTLOGD_CONF = """\
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
"""

# Runs inside the new mount namespace: private mounts first, then the daemons.
# virtlogd must be up before libvirtd starts a domain, so wait for its socket.
SUPERVISOR = r"""
set -eu
# A host name of its own (a private UTS namespace): what libvirt reports as the
# host, so two nova-computes on one machine are two hypervisors to Nova.
if [ -n "${NDT_HOSTNAME:-}" ]; then
    echo "$NDT_HOSTNAME" > /proc/sys/kernel/hostname
fi
for mount in "$@"; do
    mount --bind "${mount#*=}" "${mount%%=*}"
done
# Both daemons default to pid files directly in /run (/run/virtlogd.pid,
# /run/libvirtd.pid), outside the private mounts: a second private daemon would find
# the first one's locked. Keep them in the private run dir.
virtlogd --pid-file /run/libvirt/virtlogd.pid &
logd=$!
n=0
while [ ! -S /run/libvirt/virtlogd-sock ]; do
    n=$((n + 1))
    if [ "$n" -gt 300 ]; then echo "virtlogd did not create its socket" >&2; exit 1; fi
    sleep 0.1
done
# libvirtd in the foreground: when it dies the supervisor exits too, so a failed
# start shows up as an exited process rather than a socket that never appears.
status=0
# --timeout: should the owner die without stopping us (SIGKILL), its connections
# close and libvirtd exits once idle with no domain running, taking virtlogd with
# it, instead of lingering. A live owner holds a connection.
libvirtd --timeout 60 --pid-file /run/libvirt/libvirtd.pid || status=$?
kill "$logd" 2>/dev/null || true
exit "$status"
"""


class PrivateLibvirtd:
    """A running private libvirtd; use :meth:`start` / :meth:`stop` or :func:`private_libvirtd`."""

    def __init__(
        self,
        base: Path,
        capabilities_cache: Path | None = DEFAULT_CAPS_CACHE,
        hostname: str | None = None,
    ) -> None:
        self.base = base
        self.hostname = hostname
        self.etc = base / "etc"
        self.run = base / "run"
        self.lib = base / "lib"
        self.log = base / "log"
        # QEMU capabilities probing costs several seconds per fresh daemon; libvirt
        # validates its cache (QEMU and libvirtd binaries, kernel, KVM) and writes it by
        # rename, so private daemons can share one. None keeps it private too.
        # One cache per stack: the same /usr/bin path names another QEMU on each, and
        # libvirt would re-probe each time the other stack's daemon wrote it.
        stack = stacks.current()
        if capabilities_cache is not None and stack is not stacks.STOCK:
            capabilities_cache = capabilities_cache.with_name(
                f"{capabilities_cache.name}-{stack.name}"
            )
        self.cache = capabilities_cache or base / "cache"
        self.drivers = base / "drivers"
        self.socket = self.run / "libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.socket}"
        self._proc: subprocess.Popen[bytes] | None = None
        # Held for the daemon's lifetime: keeps libvirtd's idle timeout from firing.
        self._keeper: libvirt.virConnect | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 90.0) -> None:
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise LibvirtdError(
                f"the socket path {self.socket} is longer than a unix socket allows "
                f"({MAX_SOCKET_PATH} bytes): use a shorter work directory"
            )
        require_binaries()
        ensure_qemu_identities()
        quiet_libvirt()  # every libvirt error of the run is reported by the bench, once
        for d in (self.etc, self.run, self.lib, self.log, self.drivers):
            d.mkdir(parents=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        (self.etc / "libvirtd.conf").write_text(LIBVIRTD_CONF)
        (self.etc / "qemu.conf").write_text(QEMU_CONF)
        (self.etc / "virtlogd.conf").write_text(VIRTLOGD_CONF)
        (self.drivers / "libvirt_driver_qemu.so").symlink_to(qemu_driver_module())
        for target in self._mounts():
            # Bind mounts need an existing mount point. These are the directories the
            # libvirt-daemon package itself owns; creating an empty one changes nothing
            # for anyone else, and they are never written to from outside the namespace.
            os.makedirs(target, exist_ok=True)

        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C",
            "LIBVIRT_DRIVER_DIR": str(self.drivers),
        }
        namespaces = ["--mount"]
        if self.hostname:
            namespaces.append("--uts")
            env["NDT_HOSTNAME"] = self.hostname
        argv = [
            "unshare", *namespaces, "--propagation", "private", "--",
            "sh", "-c", SUPERVISOR, "ndt-libvirtd",
            *(f"{target}={source}" for target, source in self._mounts().items()),
        ]  # fmt: skip
        with open(self.base / "daemons.log", "wb") as out:
            # A new session makes the supervisor, virtlogd and libvirtd one process group
            # that stop() can signal as a whole without touching anything else.
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip
        (self.base / "supervisor.pid").write_text(f"{self._proc.pid}\n")
        self._wait_ready(timeout)

    def _mounts(self) -> dict[str, Path]:
        return {
            "/etc/libvirt": self.etc,
            "/run/libvirt": self.run,
            "/var/lib/libvirt": self.lib,
            "/var/log/libvirt": self.log,
            "/var/cache/libvirt": self.cache,
        }

    def _wait_ready(self, timeout: float) -> None:
        import libvirt

        deadline = time.monotonic() + timeout
        last_error = "socket not created yet"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise LibvirtdError(
                    f"the private libvirtd exited with code {self._proc.returncode} during "
                    f"startup\n{self.diagnostics()}"
                )
            if self.socket.exists():
                try:
                    conn = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    last_error = str(exc)
                else:
                    if conn.getType() == "QEMU":
                        self._keeper = conn
                        self._check_private_config()
                        return
                    last_error = f"driver is {conn.getType()}, not QEMU"
                    conn.close()
            time.sleep(0.2)
        raise LibvirtdError(
            f"the private libvirtd was not ready within {timeout:.0f} s ({last_error})\n"
            f"{self.diagnostics()}"
        )

    def _check_private_config(self) -> None:
        # libvirtd silently falls back to built-in defaults when it finds no config, so
        # prove ours is in effect: only our libvirtd.conf sends its log to this file.
        if not (self.log / "libvirtd.log").exists():
            raise LibvirtdError(
                "the private libvirtd runs but did not write log/libvirtd.log: the private "
                f"/etc/libvirt is not in effect\n{self.diagnostics()}"
            )

    def stop(self) -> None:
        """Destroy and undefine every domain, stop the daemons, remove the base dir."""
        problems: list[str] = []
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._remove_domains()
            except Exception as exc:  # teardown must go on to stop the daemons
                problems.append(f"removing domains: {exc}")
        if self._keeper is not None:
            with contextlib.suppress(Exception):
                self._keeper.close()
            self._keeper = None
        self._kill_leftover_qemu()
        if self._proc is not None:
            self._stop_group()
        shutil.rmtree(self.base, ignore_errors=True)
        if problems:
            LOG.warning("private libvirtd teardown: %s", "; ".join(problems))

    def _remove_domains(self) -> None:
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            for dom in conn.listAllDomains():
                if dom.isActive():
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
                if dom.isPersistent():
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.undefineFlags(
                            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                        )
        finally:
            conn.close()

    def _kill_leftover_qemu(self) -> None:
        # QEMU runs in a session of its own, outside the daemons' process group; the
        # pid files in our private run dir name exactly the QEMUs this daemon started.
        pids = [
            pid
            for pidfile in (self.run / "qemu").glob("*.pid")
            if (pid := pid_from(pidfile, ("qemu-system",))) is not None
        ]
        if pids:
            LOG.warning("killing leftover QEMU pid(s) %s", pids)
            kill_and_wait(pids, signal.SIGKILL)

    def _stop_group(self) -> None:
        assert self._proc is not None
        pgid = self._proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        # libvirtd/virtlogd may outlive the supervisor shell for a moment; make sure
        # nothing of the group is still running before the base dir goes. Zombies
        # (reparented, waiting for init to reap them) no longer matter.
        deadline = time.monotonic() + 20
        while live_group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if live_group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

    # ------------------------------------------------------------------ use

    def open(self) -> libvirt.virConnect:
        """A new read-write connection to the private daemon (the caller closes it)."""
        import libvirt

        return libvirt.open(self.uri)

    def versions(self) -> dict[str, str]:
        """The daemon's libvirt and QEMU versions, as its stack reports them."""
        assert self._keeper is not None, "the daemon is not running"
        return {
            "stack": stacks.current().name,
            "libvirt": format_version(version_from_int(self._keeper.getLibVersion())),
            "qemu": format_version(version_from_int(self._keeper.getVersion())),
        }

    def qemu_pidfile(self, domain_name: str) -> Path:
        return self.run / "qemu" / f"{domain_name}.pid"

    def qemu_log(self, domain_name: str) -> Path:
        """The domain's QEMU log (libvirt writes QEMU's command line and stderr there)."""
        return self.log / "qemu" / f"{domain_name}.log"

    def diagnostics(self, lines: int = 40) -> str:
        """Tails of the daemon logs, for error messages."""
        return "\n".join(
            tail(p, lines)
            for p in (self.base / "daemons.log", self.log / "libvirtd.log",
                      self.log / "virtlogd.log")
        )  # fmt: skip


@contextlib.contextmanager
def private_libvirtd(
    base_dir: str | None = None,
    timeout: float = 90.0,
    capabilities_cache: Path | None = DEFAULT_CAPS_CACHE,
    hostname: str | None = None,
) -> Iterator[PrivateLibvirtd]:
    """Start a private libvirtd for the duration of the ``with`` block (root only).

    ``hostname``: the host name libvirt reports (a UTS namespace of its own).
    """
    if os.geteuid() != 0:
        raise LibvirtdError("a private libvirtd with the QEMU system driver needs root")
    base = Path(tempfile.mkdtemp(prefix="ndt-libvirtd-", dir=base_dir))
    daemon = PrivateLibvirtd(base, capabilities_cache, hostname)
    try:
        daemon.start(timeout=timeout)
        yield daemon
    finally:
        daemon.stop()
