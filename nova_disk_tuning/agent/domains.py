"""The libvirt domains of this plugin's instances: look up, define, start, stop.

The one module of the compute driver that calls libvirt-python. Every
lookup of a known instance goes through :meth:`Domains.ensure_defined`,
which defines the domain again from the instance's ``libvirt.xml`` when
libvirt does not know it: libvirt's test driver (``test:///default``) forgets
every domain when the process that opened it exits, and a host whose libvirt
lost a definition gets it back the same way. A domain defined again is shut
off: the test driver cannot keep a guest running across processes.
"""

from __future__ import annotations

from typing import Any

import libvirt
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent import assembly
from nova_disk_tuning.agent.record import InstanceRecord
from nova_disk_tuning.agent.store import InstanceStore
from nova_disk_tuning.host import Host

LOG = logging.getLogger(__name__)

# libvirt's domain states, by number (virDomainState), as list/show print them.
POWER_STATES = {
    0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown",
    5: "shutoff", 6: "crashed", 7: "pmsuspended",
}  # fmt: skip
# Errors that mean "already so": stopping a stopped domain, removing a removed one.
_GONE = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)


class Domains:
    """The domains of the instances in ``store``, on ``host``'s connection."""

    def __init__(self, host: Host, store: InstanceStore) -> None:
        self.host = host
        self.store = store

    @property
    def _conn(self) -> Any:
        return self.host.get_connection()

    def error(self, what: str, exc: libvirt.libvirtError) -> exception.HypervisorError:
        # libvirt's schema errors run over several lines; the first says what.
        message = (exc.get_error_message() or str(exc)).strip().splitlines()[0]
        return exception.HypervisorError(uri=self.host.uri, reason=f"{what}: {message}")

    def lookup(self, uuid: str) -> Any | None:
        try:
            return self._conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self.error(f"looking up domain {uuid}", exc) from None

    def refuse_foreign(self, name: str, uuid: str) -> None:
        """Refuse a name or uuid that libvirt already has a domain for."""
        for lookup, key in ((self._conn.lookupByName, name), (self._conn.lookupByUUIDString, uuid)):
            try:
                lookup(key)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue
                raise self.error(f"looking up domain {key}", exc) from None
            raise exception.InstanceExists(
                name=f"{name} (libvirt at {self.host.uri} has a domain {key!r} "
                "that this plugin did not create)"
            )

    def define(self, xml: str, name: str, checked: bool = False) -> Any:
        """Define ``xml`` with libvirt's schema validation.

        ``checked``: the XML was rendered from config objects that
        :func:`assembly.build_guest` already guarded; otherwise (XML read from a
        file) the native-AIO guard parses it first.
        """
        if not checked:
            assembly.check_native_io(xml)
        try:
            return self._conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as exc:
            raise self.error(f"defining instance {name}", exc) from None

    def ensure_defined(self, record: InstanceRecord) -> Any:
        """The domain of a known instance, defined again from libvirt.xml if missing."""
        domain = self.lookup(record.uuid)
        if domain is not None:
            return domain
        domain = self.define(self.store.read_xml(record.uuid), record.name)
        LOG.info(
            "Instance %s: libvirt at %s did not know its domain (the test driver forgets "
            "domains between processes); defined it again from %s",
            record.name,
            self.host.uri,
            self.store.xml_path(record.uuid),
        )
        return domain

    def power_state(self, record: InstanceRecord) -> str:
        """libvirt's state of a finished instance (its domain defined again if needed)."""
        domain = self.ensure_defined(record)
        return POWER_STATES.get(domain.state()[0], "unknown")

    def undefine(self, domain: Any) -> None:
        try:
            domain.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise self.error("undefining the domain", exc) from None

    def stop(self, domain: Any) -> None:
        try:
            if domain.isActive():
                domain.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _GONE:
                raise self.error("stopping the domain", exc) from None

    def start(self, name: str, domain: Any) -> None:
        try:
            domain.create()
        except libvirt.libvirtError as exc:
            console = self.store.console_path(domain.UUIDString())
            raise self.error(
                f"starting instance {name} (the console log is {console})", exc
            ) from None
        LOG.info("Instance %s: started", name)

    def shutdown(self, name: str, domain: Any) -> None:
        """Ask the guest to power off (ACPI); a refusal is logged, not raised."""
        try:
            domain.shutdown()
        except libvirt.libvirtError as exc:
            LOG.info("Instance %s: clean shutdown refused (%s)", name, exc)
