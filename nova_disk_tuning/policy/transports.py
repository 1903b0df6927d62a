"""What each volume transport is, as data: how the guest sees it and the AIO mode it prefers.

One table for both paths a volume can take. The agent's volume drivers take
their hint and storage kind from it; the Nova drop-in reads it for the
volumes Nova's own drivers attached, by ``connection_info
['driver_volume_type']``. A transport not listed has no preference (its
driver may still give one: the agent's ``aio_hint`` hook).

The hints are the Nova spec "Libvirt: AIO mode for disk devices": a block
device never waits for a host file system to allocate, so native AIO is
safe on it; files on a share (NFS, Quobyte) prefer native too, and the
policy still falls back to threads when the measured file is sparse;
QEMU's own network clients (RBD) ignore ``io``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Transport:
    """One ``driver_volume_type``."""

    name: str
    # How the guest is given the volume: <disk type='block|file|network'>.
    source_type: str
    # The AIO mode it prefers; None: no preference.
    aio_hint: str | None
    # DiskFacts.storage_kind where the host cannot measure it (io_uring's denylist).
    storage_kind: str | None = None


_BLOCK = ("iscsi", "iser", "fibre_channel", "nvmeof", "local", "scaleio", "storpool")

TRANSPORTS: Mapping[str, Transport] = {
    t.name: t
    for t in (
        *(Transport(name, "block", "native") for name in _BLOCK),
        Transport("nfs", "file", "native", "nfs"),
        Transport("quobyte", "file", "native", "quobyte"),
        Transport("rbd", "network", None, "rbd"),
    )
}


def transport(name: str | None) -> Transport | None:
    """The transport ``name`` (a ``driver_volume_type``), None when it is not listed."""
    return TRANSPORTS.get(name or "")


def aio_hint(name: str | None) -> str | None:
    """The AIO mode the transport ``name`` prefers; None for no preference or an unknown one."""
    known = transport(name)
    return known.aio_hint if known else None


def storage_kind(name: str | None) -> str | None:
    known = transport(name)
    return known.storage_kind if known else None
