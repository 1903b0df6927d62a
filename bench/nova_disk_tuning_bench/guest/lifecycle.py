"""A guest's life in the private libvirtd: started paused, waited for, discarded.

Guests are defined (persistent) rather than created transient, for one fact:
once a transient domain stops it is gone, and with it libvirt's reason for
the stop. A persistent one keeps it, so a guest that powered off is told
apart from a QEMU that ended under it (SIGKILL, as the OOM killer sends, or
a QEMU abort: shutoff reason ``crashed``), which would otherwise read as a
guest whose fio printed nothing. Each definition is dropped once its boot
is over (:func:`discard`); one a killed run left goes with the private
libvirtd's directory.

A QEMU ended by SIGTERM is not told apart: QEMU then stops as a guest
power-off does, and libvirt records ``shutdown`` for both.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from nova_disk_tuning_bench.guest.errors import GuestLost, GuestRunError, GuestStuck

# libvirt's virDomainState and virDomainShutoffReason, as virsh domstate --reason says them.
STATES = {
    0: "no state", 1: "running", 2: "blocked", 3: "paused", 4: "shutting down",
    5: "shut off", 6: "crashed", 7: "suspended",
}  # fmt: skip
SHUTOFF_REASONS = {
    0: "unknown", 1: "shutdown", 2: "destroyed", 3: "crashed", 4: "migrated", 5: "saved",
    6: "failed", 7: "from snapshot", 8: "daemon",
}  # fmt: skip
POWERED_OFF = 1  # VIR_DOMAIN_SHUTOFF_SHUTDOWN: the guest itself powered off


def start_paused(conn: Any, xml: str) -> Any:
    """Define the domain and start it paused (QEMU's argv can be read before it ends)."""
    import libvirt

    dom = conn.defineXML(xml)
    try:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError:
        discard(dom)
        raise
    return dom


def discard(dom: Any) -> None:
    """Destroy the domain if it runs and drop its definition; best effort.

    Nothing here is worth more than the error being reported: whatever this
    leaves (a private libvirtd that died under it) ends with the run's work
    directory, whose QEMUs are ended by their pid files.
    """
    import libvirt

    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass  # it ended by itself meanwhile, or the daemon is gone
    try:
        dom.undefine()
    except libvirt.libvirtError:
        pass  # transient (gone once stopped) or already undefined


def lost_reason(dom: Any, settle: float = 0.0) -> str | None:
    """Why the domain stopped without its guest powering off, or None.

    None while it runs (after ``settle`` seconds of looking), once the guest
    powered off, and for a transient domain that is gone (its reason went
    with it).
    """
    import libvirt

    deadline = time.monotonic() + settle
    while True:
        state, reason = _state(dom)
        stopped = state in (None, libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED)
        if stopped or time.monotonic() >= deadline:
            return _lost(state, reason)
        time.sleep(0.1)


def lost(why: str, message: str) -> GuestLost:
    """A GuestLost saying ``message``, with the reason alone in ``.why``."""
    error = GuestLost(message)
    error.why = why
    return error


def _state(dom: Any) -> tuple[int | None, int | None]:
    import libvirt

    try:
        state, reason = dom.state()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None, None  # a transient domain disappears when it stops
        raise GuestRunError(
            f"libvirt cannot say what became of domain {dom.name()}: {exc}"
        ) from None
    return state, reason


def _lost(state: int | None, reason: int | None) -> str | None:
    import libvirt

    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason != POWERED_OFF:
        said = SHUTOFF_REASONS.get(reason or 0, str(reason))
        hint = "; the host's dmesg says if the OOM killer ended it" if said == "crashed" else ""
        return f"QEMU ended without the guest powering off (libvirt: {said}{hint})"
    if state == libvirt.VIR_DOMAIN_CRASHED:  # held by on_crash preserve (bench guests destroy)
        return "the guest panicked and is held (libvirt: crashed)"
    return None


def console_log_path(domain: Any) -> Path | None:
    """The file the domain's first serial port writes to, from the live XML."""
    root = ET.fromstring(domain.XMLDesc(0))
    for tag in ("serial", "console"):
        for chardev in root.findall(f"./devices/{tag}"):
            if chardev.get("type") == "file":
                src = chardev.find("source")
                path = src.get("path") if src is not None else None
                if path:
                    return Path(path)
            log = chardev.find("log")
            logfile = log.get("file") if log is not None else None
            if logfile:
                return Path(logfile)
    return None


def tail(path: Path | None, lines: int = 60) -> str:
    if path is None:
        return "(the domain has no file-backed serial console)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc})"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


def wait_for_shutoff(
    domain: Any,
    timeout: float = 180.0,
    console_log: Path | None = None,
    qemu_log: Path | None = None,
) -> None:
    """Wait until the guest has powered off (or, if transient, is gone).

    Raises GuestLost (:func:`lost_reason`) when it stopped otherwise, and
    GuestStuck, after destroying it, when it still runs after ``timeout``.
    Both carry the tail of the serial console (from the domain XML unless
    ``console_log`` is given) and, if given, of the domain's QEMU log
    (``PrivateLibvirtd.qemu_log(name)``).
    """
    import libvirt

    if console_log is None:
        try:
            console_log = console_log_path(domain)
        except libvirt.libvirtError:
            console_log = None

    def tails() -> str:  # read when it fails: what the guest said last
        return f"{tail(console_log)}" + (f"\n{tail(qemu_log, 20)}" if qemu_log else "")

    deadline = time.monotonic() + timeout
    while True:
        state, reason = _state(domain)
        why = _lost(state, reason)
        if why:
            if state == libvirt.VIR_DOMAIN_CRASHED:
                _destroy(domain)
            raise lost(why, f"domain {domain.name()}: {why}\n{tails()}")
        if state in (None, libvirt.VIR_DOMAIN_SHUTOFF):
            return
        if time.monotonic() >= deadline:  # after one last look: no race with a late power-off
            break
        time.sleep(0.25)
    _destroy(domain)
    raise GuestStuck(
        f"domain {domain.name()} did not shut off within {timeout:.0f} s "
        f"({STATES.get(state or 0, str(state))})\n{tails()}"
    )


def _destroy(dom: Any) -> None:
    import libvirt

    try:
        dom.destroy()
    except libvirt.libvirtError:
        pass  # it stopped by itself meanwhile
