"""What the tuning policy decides from: facts about a disk and the host.

Image backends, volume drivers and ``nova-disk-tuning explain`` *measure*
these facts and hand them to :mod:`nova_disk_tuning.policy.decide`;
they never decide a setting themselves. This module does no I/O and holds
no policy, so a backend can import it without importing the policy.

Where O_DIRECT works is a fact of the *disk* (``DiskFacts.direct_io``), not
of the host: one host has instance files on ext4, volumes on NFS or tmpfs and
raw block devices, and each answers O_DIRECT differently. Nova probes only
``instances_path`` and applies the answer to every disk; we let the caller
probe each disk's own path (``StorageProbe.supports_direct_io``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nova_disk_tuning import exception
from nova_disk_tuning.common.versions import (
    DISCARD_NO_UNREF_LIBVIRT,
    IO_URING_LIBVIRT,
    IO_URING_QEMU,
    QUEUE_MAPPING_LIBVIRT,
    QUEUE_MAPPING_QEMU,
    Version,
    at_least,
    format_version,
    short_version,
)
from nova_disk_tuning.domxml.disk_values import (
    DISK_DISCARD_MODES,
    DISK_IO_MODES,
    DISK_SOURCE_TYPES,
)

DecisionValue = str | int | dict[int, list[int]] | None


@dataclass(frozen=True)
class Decision:
    """One setting and why. ``value`` None means: emit nothing.

    Values are libvirt's attribute values (``"none"``, ``"native"``), ints
    (IOThread ids, queue counts) or, for per-queue IOThread mapping,
    ``{IOThread id: [virtqueue ids]}``.
    """

    value: DecisionValue
    reason: str

    def int_value(self) -> int | None:
        """The value of an IOThread id or count decision (None: emit nothing)."""
        if self.value is not None and not isinstance(self.value, int):
            raise TypeError(f"{self.value!r} is not an id or a count ({self.reason})")
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class DiskFacts:
    """Measured facts about one guest disk.

    ``size`` is the guest-visible (virtual) size and ``allocated`` the bytes
    the host storage has allocated for it: for raw files ``st_size`` and
    ``st_blocks * 512``; for qcow2 the virtual size and the file's host
    allocation (KubeVirt's rule: a qcow2 whose allocation reaches its virtual
    size will not allocate on write). ``fully_allocated`` is the caller's
    verdict when it has one (e.g. ``StorageProbe.allocation``); when None it
    is derived from ``size``/``allocated`` where both are known.

    ``name`` is the guest target (``vda``); ``GuestTuning.apply_to_guest``
    matches it against each disk config's ``target_dev``.
    """

    name: str
    source_type: str
    format: str = "raw"
    path: str | None = None
    size: int | None = None
    allocated: int | None = None
    fully_allocated: bool | None = None
    backing_file: str | None = None
    shareable: bool = False
    bus: str = "virtio"
    # The backend's or volume driver's preferred AIO mode; None: no preference
    # (RBD and other in-QEMU network transports).
    aio_hint: str | None = None
    driver: str | None = None
    is_volume: bool = False
    # Whether an O_DIRECT open + aligned write works at ``path``; None: not measured.
    direct_io: bool | None = None
    # "lvm", "cifs", "krbd", "nfs", ...: storage io_uring is known to hang on.
    storage_kind: str | None = None
    # The volume's own discard request (connection_info data.discard -> "unmap").
    discard: str | None = None

    def __post_init__(self) -> None:
        if self.source_type not in DISK_SOURCE_TYPES:
            self._invalid(f"source_type {self.source_type!r} is not one of {DISK_SOURCE_TYPES}")
        if self.aio_hint is not None and self.aio_hint not in DISK_IO_MODES:
            self._invalid(f"aio_hint {self.aio_hint!r} is not one of {DISK_IO_MODES} or None")
        if self.discard is not None and self.discard not in DISK_DISCARD_MODES:
            self._invalid(f"discard {self.discard!r} is not one of {DISK_DISCARD_MODES} or None")
        if self.source_type != "network" and not self.path:
            self._invalid(f"a {self.source_type} disk needs a path")

    def _invalid(self, reason: str) -> None:
        raise exception.InvalidDiskConfig(disk=self.name, reason=reason)

    @property
    def allocation_covers_size(self) -> bool | None:
        """True when writes will not allocate; None when not measured."""
        if self.fully_allocated is not None:
            return self.fully_allocated
        if self.size is None or self.allocated is None:
            return None
        return self.allocated >= self.size

    @property
    def preallocated(self) -> bool:
        """A file whose allocation covers its size: what preallocation leaves, measured.

        Measured, never taken from the configuration or a backend's intent:
        a file that fallocate could not cover (ext2, ENOSPC) is not
        preallocated, and a full copy is, for guest TRIM can make either
        sparse again.
        """
        return self.source_type == "file" and bool(self.allocation_covers_size)

    def replace(self, **changes: Any) -> DiskFacts:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, and the verdict ``preallocated`` (which :meth:`from_dict` ignores)."""
        return {**dataclasses.asdict(self), "preallocated": self.preallocated}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiskFacts:
        """The facts :meth:`to_dict` stored; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class HostCaps:
    """What this host's libvirt, QEMU and kernel can do.

    ``qemu_version`` is None when the connection's hypervisor is not QEMU
    (libvirt's test driver reports its own version), and both versions are
    None without a connection (``audit`` of XML files on a host without
    libvirtd): features that need an unknown version are treated as
    unavailable, and reasons say why.
    """

    libvirt_version: Version | None
    qemu_version: Version | None
    kernel_io_uring: bool
    kernel_io_uring_detail: str = ""

    @property
    def io_uring(self) -> bool:
        return (
            self.kernel_io_uring
            and at_least(self.libvirt_version, IO_URING_LIBVIRT)
            and at_least(self.qemu_version, IO_URING_QEMU)
        )

    def io_uring_missing(self) -> str:
        """Why io_uring is not usable here ('' when it is)."""
        missing = []
        if self.libvirt_version is None:
            missing.append("libvirt version unknown")
        elif self.libvirt_version < IO_URING_LIBVIRT:
            missing.append(
                f"libvirt {format_version(self.libvirt_version)} < "
                f"{short_version(IO_URING_LIBVIRT)}"
            )
        if self.qemu_version is None:
            missing.append("QEMU version unknown")
        elif self.qemu_version < IO_URING_QEMU:
            missing.append(
                f"QEMU {format_version(self.qemu_version)} < {short_version(IO_URING_QEMU)}"
            )
        if not self.kernel_io_uring:
            missing.append(f"kernel: {self.kernel_io_uring_detail or 'io_uring not usable'}")
        return ", ".join(missing)

    @property
    def discard_no_unref(self) -> bool:
        return at_least(self.libvirt_version, DISCARD_NO_UNREF_LIBVIRT)

    @property
    def iothread_queue_mapping(self) -> bool:
        return at_least(self.libvirt_version, QUEUE_MAPPING_LIBVIRT) and at_least(
            self.qemu_version, QUEUE_MAPPING_QEMU
        )

    def describe(self) -> str:
        return (
            f"libvirt {format_version(self.libvirt_version)}, "
            f"QEMU {format_version(self.qemu_version)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "libvirt_version": format_version(self.libvirt_version),
            "qemu_version": format_version(self.qemu_version),
            "kernel_io_uring": self.kernel_io_uring,
            "kernel_io_uring_detail": self.kernel_io_uring_detail,
            "io_uring": self.io_uring,
            "discard_no_unref": self.discard_no_unref,
            "iothread_queue_mapping": self.iothread_queue_mapping,
        }
