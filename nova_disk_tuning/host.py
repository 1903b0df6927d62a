"""The libvirt connection of this compute host, its versions and capabilities.

:func:`host_caps` is the one way :class:`HostCaps` are read from a libvirt
connection: the agent's :class:`Host`, ``explain``, ``audit``, the
benchmarks and the Nova drop-in (on the connection Nova opened) all call it.

One :class:`Host` per process (or per test): it opens the connection on first
use and keeps it, and caches :meth:`Host.caps` on the object, never in a
module global, so a test simply builds a new Host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common.versions import version_from_int
from nova_disk_tuning.policy.facts import HostCaps
from nova_disk_tuning.storage import kernel

LOG = logging.getLogger(__name__)

DEFAULT_URI = "qemu:///system"
IoUringProbe = Callable[[], kernel.IoUringSupport]


def host_caps(conn: Any | None, io_uring_probe: IoUringProbe = kernel.io_uring_support) -> HostCaps:
    """What the tuning policy needs to know about the host behind ``conn``.

    ``getVersion()`` is the *hypervisor's* version: QEMU's for the QEMU
    driver, but a fixed 2 (0.0.2) for libvirt's test driver, which says
    nothing about the QEMU that would run a guest; so it counts as QEMU's
    only when ``getType()`` says QEMU. Without a connection (``audit`` of
    XML files on a host without libvirtd) both versions are unknown.
    """
    qemu = libvirt = None
    if conn is not None:
        libvirt = version_from_int(conn.getLibVersion())
        if conn.getType() == "QEMU":
            qemu = version_from_int(conn.getVersion())
    io_uring = io_uring_probe()
    return HostCaps(
        libvirt_version=libvirt,
        qemu_version=qemu,
        kernel_io_uring=io_uring.usable,
        kernel_io_uring_detail=io_uring.reason,
    )


def quiet_libvirt() -> None:
    """Stop libvirt printing every error to stderr besides raising it.

    The errors it raises reach the user in one line of ours; the copy it
    prints, for expected ones too (a domain gone once it stopped), would not.
    """
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class Host:
    """libvirt at ``[libvirt] connection_uri`` (empty: qemu:///system)."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        read_only: bool = False,
        io_uring_probe: IoUringProbe = kernel.io_uring_support,
    ) -> None:
        self._conf = conf
        self._read_only = read_only
        # The kernel's answer (a real io_uring_setup call); injectable for tests.
        self._io_uring_probe = io_uring_probe
        self._conn: Any = None
        self._caps: HostCaps | None = None

    @property
    def uri(self) -> str:
        return self._conf.libvirt.connection_uri or DEFAULT_URI

    def get_connection(self) -> Any:
        """The open ``libvirt.virConnect``, connecting on first use."""
        if self._conn is not None:
            return self._conn
        import libvirt

        quiet_libvirt()
        try:
            conn = libvirt.openReadOnly(self.uri) if self._read_only else libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise exception.HypervisorError(
                uri=self.uri,
                reason=f"cannot connect: {exc.get_error_message() or exc}. Check that "
                "libvirtd (or virtqemud) is running and that this user may use its "
                "socket, or set [libvirt] connection_uri (test:///default needs no daemon).",
            ) from None
        if conn is None:
            raise exception.HypervisorError(uri=self.uri, reason="libvirt returned no connection")
        LOG.debug("Connected to libvirt at %s", self.uri)
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, what: str, func: Any, *args: Any) -> Any:
        import libvirt

        try:
            return func(*args)
        except libvirt.libvirtError as exc:
            raise exception.HypervisorError(
                uri=self.uri, reason=f"{what} failed: {exc.get_error_message() or exc}"
            ) from None

    def caps_without_connection(self) -> HostCaps:
        """The kernel's facts only: libvirt and QEMU versions unknown."""
        return host_caps(None, self._io_uring_probe)

    def caps(self) -> HostCaps:
        """What the tuning policy needs to know about this host (cached on the object)."""
        if self._caps is None:
            conn = self.get_connection()
            self._caps = self._call("reading the versions", host_caps, conn, self._io_uring_probe)
            LOG.debug("Host capabilities at %s: %s", self.uri, self._caps)
        return self._caps
