"""The contract every image backend implements, and what backends share.

A backend is one class per ``[libvirt] images_type``, loaded by entry point
(``nova_disk_tuning.image_backends``: ``flat`` and its alias ``raw``,
``qcow2``, ``lvm``, ``rbd``). The compute driver builds one per host::

    backend = loader.image_backend(conf)(conf, qemu_img=None, probe=None,
                                         zeroer=None, execute=None)

Every dependency is injectable and made when None: ``qemu_img``, ``probe``,
``zeroer`` and ``execute``, the runner of external commands
(``processutils.execute`` signature). The public methods below say what every
backend promises; a backend implements ``_names``, ``_make_root``,
``_make_blank`` and ``destroy``.

What a create will make is announced before it is made (``announce``): the
caller records it, so a process killed between ``lvcreate`` (or the first
byte of a file) and its record still leaves a record that ``destroy`` reads.

Names follow Nova: files ``<instance_dir>/disk``, ``disk.eph0``,
``disk.swap``; logical volumes and RBD images ``<instance uuid>_disk`` and
so on, the uuid being the basename of ``instance_dir``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from oslo_concurrency import processutils
from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.common.units import GiB
from nova_disk_tuning.domxml import LibvirtConfigGuestDisk
from nova_disk_tuning.images.cache import CachedImage
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.storage.probe import StorageProbe
from nova_disk_tuning.storage.zero import Zeroer

LOG = logging.getLogger(__name__)

Execute = Callable[..., tuple[str, str]]
DiskRef = GuestDisk | LibvirtConfigGuestDisk | str
# Told what a create will make, before it makes it (see the module's doc).
Announce = Callable[[tuple[str, ...]], None]
BLANK_KINDS = ("ephemeral", "swap")
# mkfs command lines for ephemeral disks; the label is Nova's ("ephemeral0"),
# which cloud-init looks for.
MKFS = {
    "ext2": ("mkfs.ext2", "-q", "-F", "-L"),
    "ext3": ("mkfs.ext3", "-q", "-F", "-L"),
    "ext4": ("mkfs.ext4", "-q", "-F", "-L"),
    "xfs": ("mkfs.xfs", "-q", "-f", "-L"),
    "vfat": ("mkfs.vfat", "-n"),
}


def disk_name(kind: str, index: int = 0) -> str:
    """Nova's names: ``disk``, ``disk.eph<index>``, ``disk.swap``."""
    if kind == "root":
        return "disk"
    if kind == "ephemeral":
        return f"disk.eph{index}"
    if kind == "swap":
        return "disk.swap"
    raise exception.InvalidDiskConfig(
        disk=kind, reason=f"unknown disk kind {kind!r}; use root, {' or '.join(BLANK_KINDS)}"
    )


def is_disk_name(name: str) -> bool:
    """Whether ``name`` is one :func:`disk_name` gives (a file disk in an instance directory)."""
    return re.fullmatch(r"disk(?:\.eph[0-9]+|\.swap)?", name) is not None


@dataclasses.dataclass(frozen=True)
class DiskRequest:
    """One disk to make: whose, its guest target, its size and what it is for."""

    instance_dir: str
    target_dev: str
    size: int
    kind: str = "root"  # root, ephemeral or swap
    bus: str = "virtio"
    index: int = 0  # ephemeral disks: disk.eph<index>
    fs_format: str | None = None  # ephemeral disks: mkfs where the backend can

    @property
    def name(self) -> str:
        return disk_name(self.kind, self.index)


def root_size(base: CachedImage, size: int | None) -> int:
    """The root disk size: the flavor's, or the image's when the flavor says 0/None."""
    if not size:
        return base.virtual_size
    if size < base.virtual_size:
        raise exception.ImageUnacceptable(
            path=base.path,
            reason=f"its virtual size ({base.virtual_size} bytes) is larger than the "
            f"flavor's root disk ({size} bytes); choose a flavor with a root disk of at "
            f"least {-(-base.virtual_size // GiB)} GiB",
        )
    return size


class ImageBackend:
    """Creates and removes the disks of one instance on one kind of storage."""

    name: ClassVar[str] = ""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        qemu_img: QemuImg | None = None,
        probe: StorageProbe | None = None,
        zeroer: Zeroer | None = None,
        execute: Execute | None = None,
    ) -> None:
        self.conf = conf
        self.probe = probe or StorageProbe()
        self.qemu_img = qemu_img or QemuImg(conf, probe=self.probe)
        self.zeroer = zeroer or Zeroer(self.probe)
        # Runs external commands (mkswap, mkfs, lvcreate, rbd, shred):
        # injectable because LVM and Ceph cannot run on every test host.
        self._execute = execute or processutils.execute

    # Commands this backend runs on the host (checked by check_host()).
    required_commands: ClassVar[tuple[tuple[str, str], ...]] = ()

    # The interface --------------------------------------------------------------

    def check_host(self) -> None:
        """Refuse, before any work, a host that lacks what this backend runs.

        Only when commands really run here: an injected ``execute`` stands in
        for them (tests of LVM and Ceph on hosts without either).
        """
        if self._execute is not processutils.execute:
            return
        for command, package in self.required_commands:
            if shutil.which(command, path=command_env().get("PATH")) is None:
                raise exception.InvalidConfig(
                    reason=f"[libvirt] images_type = {self.name} needs the {command} command, "
                    f"which is not installed; install {package} or choose another images_type"
                )

    def create_root(
        self,
        instance_dir: str,
        target_dev: str,
        base: CachedImage,
        size: int | None = None,
        bus: str = "virtio",
        announce: Announce | None = None,
    ) -> GuestDisk:
        """The root disk of an instance, from ``base`` (the cached image).

        ``size`` is the flavor's root disk in bytes; None or 0 means the
        image's virtual size, and smaller than the image is refused
        (ImageUnacceptable). The disk is measured *after* preallocation: the
        returned GuestDisk's config holds only source, target and format, and
        its DiskFacts say what was achieved (``preallocated`` only when
        fallocate really covered the disk). Anything a failed create made is
        removed before the error propagates; an existing disk is never
        overwritten. ``announce`` is called with what will be made (as
        :meth:`destroy` takes it) once the names are known to be free and
        before anything is made.
        """
        disk = DiskRequest(instance_dir, target_dev, root_size(base, size), "root", bus)
        self._announce(disk, announce)
        return self._make_root(disk, base)

    def create_blank(
        self,
        instance_dir: str,
        target_dev: str,
        size: int,
        kind: str = "ephemeral",
        bus: str = "virtio",
        index: int = 0,
        fs_format: str | None = None,
        announce: Announce | None = None,
    ) -> GuestDisk:
        """An ephemeral (``disk.eph<index>``) or swap (``disk.swap``) disk of ``size`` bytes.

        Raw disks (flat files, logical volumes) are formatted where it is
        cheap: swap always (mkswap), ephemeral with ``fs_format`` (ext2/3/4,
        xfs, vfat); qcow2 and rbd disks stay unformatted (the guest formats
        them). Measured, cleaned up on failure and never overwriting, as
        :meth:`create_root`.
        """
        self._check_blank(target_dev, size, kind, fs_format)
        disk = DiskRequest(instance_dir, target_dev, size, kind, bus, index, fs_format)
        self._announce(disk, announce)
        return self._make_blank(disk)

    def destroy(self, disks: Iterable[DiskRef]) -> list[str]:
        """Remove disks this backend created; return what was removed.

        ``disks`` are GuestDisks, disk configs or paths (rbd: ``pool/name``);
        what is already gone is skipped. Never the cached base image.
        """
        raise NotImplementedError

    # What each backend implements ------------------------------------------------

    def _names(self, disk: DiskRequest) -> tuple[str, ...]:
        """What making ``disk`` will create, as :meth:`destroy` takes it.

        Raises StorageError when a name is taken: what is there already is
        not ours, and must never be announced as ours (destroy would remove it).
        """
        raise NotImplementedError

    def _make_root(self, disk: DiskRequest, base: CachedImage) -> GuestDisk:
        """Make ``disk`` (its size already checked against ``base``) from ``base``."""
        raise NotImplementedError

    def _make_blank(self, disk: DiskRequest) -> GuestDisk:
        """Make the ephemeral or swap ``disk`` (kind and size already checked)."""
        raise NotImplementedError

    # Shared helpers ------------------------------------------------------------

    def _announce(self, disk: DiskRequest, announce: Announce | None) -> None:
        names = self._names(disk)
        if announce is not None:
            announce(names)

    @staticmethod
    def _check_blank(target_dev: str, size: int, kind: str, fs_format: str | None) -> None:
        if kind not in BLANK_KINDS:
            raise exception.InvalidDiskConfig(
                disk=target_dev, reason=f"blank disk kind {kind!r} is not one of {BLANK_KINDS}"
            )
        if size <= 0:
            raise exception.InvalidDiskConfig(
                disk=target_dev, reason=f"size {size} must be positive"
            )
        if fs_format is not None and (kind == "swap" or fs_format not in MKFS):
            raise exception.InvalidDiskConfig(
                disk=target_dev,
                reason=f"fs_format {fs_format!r} is for ephemeral disks and one of "
                f"{', '.join(MKFS)}",
            )

    def _format(self, path: str, kind: str, fs_format: str | None, index: int) -> str | None:
        """mkswap / mkfs on a raw file or device; returns a note, None if nothing done."""
        if kind == "swap":
            self._run("mkswap", path, ["mkswap", path], "check that util-linux is installed")
            return "formatted as swap (mkswap)"
        if fs_format is None:
            return None
        argv = [*MKFS[fs_format], f"ephemeral{index}", path]
        self._run("mkfs", path, argv, f"check that the {fs_format} tools are installed")
        return f"formatted as {fs_format} ({argv[0]})"

    def _run(self, operation: str, target: str, argv: Sequence[str], hint: str) -> str:
        """Run a command; any failure is a StorageError naming it, the target and ``hint``."""
        LOG.debug("running %s", " ".join(argv))
        try:
            out, _ = self._execute(*argv, env_variables=command_env())
        except FileNotFoundError:
            raise exception.StorageError(
                operation=operation, path=target, reason=f"{argv[0]} is not installed; {hint}"
            ) from None
        except processutils.ProcessExecutionError as exc:
            lines = (exc.stderr or exc.description or "").strip().splitlines()
            detail = lines[-1] if lines else f"exit code {exc.exit_code}"
            raise exception.StorageError(
                operation=operation,
                path=target,
                reason=f"{' '.join(argv)} failed: {detail}; {hint}",
            ) from None
        return out


def command_env() -> dict[str, str]:
    # env_variables replaces the whole environment: keep PATH (mkswap, lvcreate
    # live in /usr/sbin), force C messages so errors can be matched.
    return {**os.environ, "LC_ALL": "C", "LANG": "C"}
