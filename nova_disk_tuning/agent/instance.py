"""Instances, flavors and images as the compute driver sees them, and where they live.

Every instance has a directory ``$instances_path/<uuid>/`` holding its disks
(as the image backend lays them out), the guest XML it was defined with
(``libvirt.xml``), the kernel and ramdisk for direct kernel boot, the serial
console log (``console.log``) and a record (``instance.json``): name, uuid,
flavor, image, disks, volumes and the tuning with its reasons.

:mod:`.store` manages the directories. The record is what lets state survive
the process. libvirt's test driver (``test:///default``) keeps domains only
in the memory of the process that opened it, so the compute driver defines
every known instance again from its ``libvirt.xml`` whenever its domain is missing (see
:meth:`LibvirtDriver.ensure_defined
<nova_disk_tuning.agent.driver.LibvirtDriver.ensure_defined>`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from nova_disk_tuning import exception

RECORD_VERSION = 1
# libvirt accepts more, but a name also ends up in file names and logs.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}")


@dataclasses.dataclass(frozen=True)
class Flavor:
    """The size of an instance (Nova's flavor)."""

    name: str = "custom"
    vcpus: int = 1
    memory_mb: int = 512
    root_gb: int = 0  # 0: the image's virtual size
    ephemeral_gb: int = 0
    swap_mb: int = 0
    extra_specs: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for field in ("vcpus", "memory_mb"):
            if getattr(self, field) < 1:
                raise exception.InvalidConfig(
                    reason=f"flavor {self.name!r}: {field} must be at least 1, "
                    f"got {getattr(self, field)}"
                )
        for field in ("root_gb", "ephemeral_gb", "swap_mb"):
            if getattr(self, field) < 0:
                raise exception.InvalidConfig(
                    reason=f"flavor {self.name!r}: {field} cannot be negative, "
                    f"got {getattr(self, field)}"
                )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["extra_specs"] = dict(self.extra_specs)
        return data


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """The image an instance boots from.

    ``id`` keys the base-image cache (``_base/<sha1(id)>``): two spawns with
    the same id share one cached, converted base. ``source`` is where the
    bytes are (a local path or ``file://`` URL). ``kernel``/``ramdisk``/
    ``cmdline`` are Nova's ``kernel_id``/``ramdisk_id``/``os_command_line``
    image properties, here as local paths: the guest boots them directly.
    ``properties`` holds other image properties the driver reads
    (``hw_disk_bus``).
    """

    id: str
    source: str
    disk_format: str | None = None
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline: str | None = None
    properties: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ramdisk and not self.kernel:
            raise exception.InvalidConfig(
                reason=f"image {self.id}: a ramdisk needs a kernel (direct kernel boot)"
            )
        if self.cmdline and not self.kernel:
            raise exception.InvalidConfig(
                reason=f"image {self.id}: a kernel command line needs a kernel"
            )

    @property
    def disk_bus(self) -> str:
        return self.properties.get("hw_disk_bus", "virtio")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["properties"] = dict(self.properties)
        return data


@dataclasses.dataclass(frozen=True)
class Instance:
    name: str
    uuid: str = dataclasses.field(default_factory=lambda: str(uuidlib.uuid4()))

    def __post_init__(self) -> None:
        validate_name(self.name)
        try:
            canonical = str(uuidlib.UUID(self.uuid))
        except ValueError:
            raise exception.InvalidConfig(
                reason=f"instance {self.name}: {self.uuid!r} is not a UUID"
            ) from None
        object.__setattr__(self, "uuid", canonical)


def validate_name(name: str) -> None:
    # fullmatch: "$" would let a trailing newline through.
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise exception.InvalidConfig(
            reason=f"instance name {name!r}: use 1-63 characters of letters, digits and "
            "_.+-, starting with a letter or digit"
        )
    try:
        uuidlib.UUID(name)
    except ValueError:
        return
    # Commands take a name or a uuid: a name that is a uuid would be ambiguous.
    raise exception.InvalidConfig(
        reason=f"instance name {name!r} is a UUID; commands would confuse it with an "
        "instance's uuid. Choose a name that is not one."
    )


# Reading the tuning back from a record ---------------------------------------------


def image_id_for_path(path: str) -> str:
    """The cache id of a local image file: its real path, inode, size, mtime and ctime.

    A changed file is a new image and gets a new cache entry; the same file
    spawned twice shares one. The change time catches a rewrite that kept
    the size and restored the mtime (``cp -p``, ``rsync -t``). Pass
    ``--image-id`` to choose the id (e.g. a Glance image UUID).
    """
    import hashlib

    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise exception.ImageNotFound(path=path) from None
    numbers = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    # The name's own bytes (os.fsencode): any name the file system holds.
    fields = (os.fsencode(real), *(str(n).encode() for n in numbers))
    digest = hashlib.sha256(b"\0".join(fields)).hexdigest()
    return f"file-{digest[:32]}"
