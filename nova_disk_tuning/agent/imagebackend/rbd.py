"""The ``rbd`` image backend: Ceph RBD images, used by QEMU's own librbd client.

Images are ``<images_rbd_pool>/<instance uuid>_disk`` (``_disk.eph0``,
``_disk.swap``), made with the ``rbd`` CLI through the injectable runner:
``rbd import`` of the raw cached base, ``rbd resize`` to the flavor size,
``rbd create`` for blank disks, ``rbd rm`` on delete. Nothing touches local
storage. The disk config is a network disk with the monitors from
``mon_host`` in ``images_rbd_ceph_conf`` (or given as ``hosts``) and the
``rbd_user`` / ``rbd_secret_uuid`` auth.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from oslo_concurrency import processutils
from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.agent.imagebackend.base import (
    DiskRef,
    DiskRequest,
    ImageBackend,
    command_env,
)
from nova_disk_tuning.common import textfile
from nova_disk_tuning.common.units import MiB
from nova_disk_tuning.domxml import LibvirtConfigGuestDisk
from nova_disk_tuning.images.cache import CachedImage
from nova_disk_tuning.policy.measure import measure_network

LOG = logging.getLogger(__name__)
DEFAULT_CEPH_CONF = "/etc/ceph/ceph.conf"
Monitor = tuple[str, int | None]
_HINT = "check the pool, the Ceph credentials and `ceph -s`"
# One address: "[v2:1.2.3.4:3300/0", "[::1]:6789", "mon1:6789", "1.2.3.4".
_ADDRESS = re.compile(
    r"^(?:v[12]:)?(?:\[(?P<v6>[0-9a-fA-F:]+)\]|(?P<host>[^:/\[\]]+))(?::(?P<port>\d+))?(?:/\d+)?$"
)


def parse_mon_host(value: str) -> list[Monitor]:
    """Monitors from a ``mon_host`` value, in the operator's order.

    Entries are separated by commas, semicolons or spaces; an address vector
    ``[v2:IP:3300/0,v1:IP:6789/0]`` names one monitor and yields its first
    address (the order Ceph's clients try).
    """
    monitors: list[Monitor] = []
    for entry in _split_entries(value):
        if entry.startswith("[") and ("v1:" in entry or "v2:" in entry):
            entry = entry[1:-1].split(",")[0].strip()
        match = _ADDRESS.match(entry)
        if not match:
            raise exception.InvalidConfig(
                reason=f"cannot read Ceph monitor address {entry!r} in mon_host {value!r}; "
                "use host[:port], [IPv6]:port or an address vector [v2:...,v1:...]"
            )
        port = match["port"]
        monitors.append((match["v6"] or match["host"], int(port) if port else None))
    return monitors


def _split_entries(value: str) -> list[str]:
    # Commas inside [...] belong to an address vector, not between monitors.
    entries, current, depth = [], "", 0
    for char in value:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth == 0 and char in ", ;\t":
            entries.append(current)
            current = ""
        else:
            current += char
    entries.append(current)
    return [e.strip() for e in entries if e.strip()]


def read_mon_host(path: str) -> list[Monitor]:
    """Monitors from a ceph.conf: ``mon_host`` in [global], else each [mon.X] ``mon_addr``.

    Parsed by hand: ceph.conf indents keys with tabs, which configparser
    would read as continuation lines. "mon host" and "mon_host" are one key.
    """
    section, mon_host, mon_addrs = "", None, []
    text = textfile.read_text(path, "Ceph configuration", textfile.CONFIG_LIMIT)
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = re.sub(r"[ _]+", "_", key.strip().lower())
        if key == "mon_host" and section == "global":
            mon_host = value.strip()
        elif key == "mon_addr" and section.startswith("mon."):
            mon_addrs.append(value.strip())
    if mon_host is not None:
        return parse_mon_host(mon_host)
    return [monitor for addr in mon_addrs for monitor in parse_mon_host(addr)]


class Rbd(ImageBackend):
    name = "rbd"

    required_commands = (("rbd", "ceph-common"),)

    def __init__(
        self, conf: cfg.ConfigOpts, *args: Any, hosts: Sequence[str] | None = None, **kwargs: Any
    ) -> None:
        """As :class:`ImageBackend`, plus ``hosts``."""
        super().__init__(conf, *args, **kwargs)
        # Monitors as host[:port]; None: read mon_host from the Ceph config.
        self._hosts = list(hosts) if hosts is not None else None

    @property
    def pool(self) -> str:
        pool: str = self.conf.libvirt.images_rbd_pool
        return pool

    def image_name(self, instance_dir: str, name: str) -> str:
        return f"{self.pool}/{os.path.basename(os.path.normpath(instance_dir))}_{name}"

    def monitors(self) -> list[Monitor]:
        if self._hosts is not None:
            return [m for host in self._hosts for m in parse_mon_host(host)]
        configured = self.conf.libvirt.images_rbd_ceph_conf
        path = configured or DEFAULT_CEPH_CONF
        if not os.path.exists(path):
            if configured:
                raise exception.InvalidConfig(
                    reason=f"[libvirt] images_rbd_ceph_conf {path} does not exist; "
                    "fix the path or leave it empty for Ceph's default"
                )
            LOG.info("No %s: RBD disks name no monitors, librbd uses its defaults", path)
            return []
        return read_mon_host(path)

    # Creation -----------------------------------------------------------------

    def _names(self, disk: DiskRequest) -> tuple[str, ...]:
        # Whether the name is taken, rbd import/create say: they refuse it.
        return (self.image_name(disk.instance_dir, disk.name),)

    def _make_root(self, disk: DiskRequest, base: CachedImage) -> GuestDisk:
        if base.format != "raw":
            raise exception.ImageUnacceptable(
                path=base.path,
                reason=f"the rbd backend imports raw images, this one is {base.format}; "
                "set [DEFAULT] force_raw_images=True so the cache keeps raw bases",
            )
        spec = self.image_name(disk.instance_dir, disk.name)
        config, auth = self._config(spec, disk.target_dev, disk.bus)
        argv = ["rbd", "import", *auth, "--image-format", "2", base.path, spec]
        notes = [f"imported {base.path}"]
        size = disk.size
        try:
            self._run("rbd import", spec, argv, _HINT)
            if size > base.virtual_size:
                mib = -(-size // MiB)
                resize = ["rbd", "resize", *auth, "--size", f"{mib}M", spec]
                self._run("rbd resize", spec, resize, _HINT)
                notes.append(f"resized to {mib} MiB")
                size = mib * MiB
        except BaseException as exc:
            # A failed import may have made the image already; a failing rm
            # must not hide why the import failed. An image that was there
            # before is not ours: rbd refused it (EEXIST), and it stays.
            if not _refused_existing(exc):
                with contextlib.suppress(exception.StorageError):
                    self._remove(spec, auth)
            raise
        return self._guest_disk(disk, config, spec, size, notes)

    def _make_blank(self, disk: DiskRequest) -> GuestDisk:
        spec = self.image_name(disk.instance_dir, disk.name)
        config, auth = self._config(spec, disk.target_dev, disk.bus)
        # rbd sizes are in MiB: round up, the guest gets at least what it asked.
        mib = -(-disk.size // MiB)
        argv = ["rbd", "create", *auth, "--image-format", "2", "--size", f"{mib}M", spec]
        self._run("rbd create", spec, argv, _HINT)
        return self._guest_disk(
            disk, config, spec, mib * MiB, [f"blank {disk.kind} image, unformatted"]
        )

    def _config(
        self, spec: str, target_dev: str, bus: str
    ) -> tuple[LibvirtConfigGuestDisk, list[str]]:
        """The disk config and the rbd CLI's auth arguments (checked before creating)."""
        user = self.conf.libvirt.rbd_user
        secret = self.conf.libvirt.rbd_secret_uuid
        if bool(user) != bool(secret):
            raise exception.InvalidConfig(
                reason="[libvirt] rbd_user and rbd_secret_uuid go together: set both "
                "(the libvirt secret holds rbd_user's key) or neither"
            )
        monitors = self.monitors()
        config = LibvirtConfigGuestDisk(
            source_type="network",
            source_protocol="rbd",
            source_name=spec,
            source_hosts=[host for host, _ in monitors],
            source_ports=[port for _, port in monitors],
            driver_name="qemu",
            driver_format="raw",
            target_dev=target_dev,
            target_bus=bus,
        )
        auth = []
        if user:
            config.auth_username = user
            config.auth_secret_type = "ceph"
            config.auth_secret_uuid = secret
            auth += ["--id", user]
        if self.conf.libvirt.images_rbd_ceph_conf:
            auth += ["--conf", self.conf.libvirt.images_rbd_ceph_conf]
        return config, auth

    def _guest_disk(
        self,
        disk: DiskRequest,
        config: LibvirtConfigGuestDisk,
        spec: str,
        size: int,
        notes: list[str],
    ) -> GuestDisk:
        facts = measure_network(
            disk.target_dev, size=size, bus=config.target_bus or "virtio", driver=self.name
        )
        LOG.info("Created RBD image %s for %s: %s", spec, disk.target_dev, "; ".join(notes))
        return GuestDisk(config=config, facts=facts, created=(spec,), notes=tuple(notes))

    # Removal ------------------------------------------------------------------

    def destroy(self, disks: Iterable[DiskRef]) -> list[str]:
        _, auth = self._config(f"{self.pool}/x", "vda", "virtio")
        removed = []
        for disk in disks:
            if isinstance(disk, str):
                specs: Sequence[str] = [disk]
            elif isinstance(disk, GuestDisk):
                specs = disk.created
            else:
                specs = [disk.source_name] if disk.source_name else []
            for spec in specs:
                if self._remove(spec, auth):
                    removed.append(spec)
        return removed

    def _remove(self, spec: str, auth: list[str]) -> bool:
        argv = ["rbd", "rm", *auth, spec]
        try:
            self._execute(*argv, env_variables=command_env())
        except processutils.ProcessExecutionError as exc:
            if "No such file or directory" in (exc.stderr or ""):
                LOG.info("RBD image %s is already gone", spec)
                return False
            raise exception.StorageError(
                operation="rbd rm",
                path=spec,
                reason=f"{' '.join(argv)} failed: {(exc.stderr or '').strip()}; {_HINT}",
            ) from None
        LOG.info("Removed RBD image %s", spec)
        return True


def _refused_existing(exc: BaseException) -> bool:
    """Whether rbd failed because the image name is taken ("(17) File exists")."""
    return isinstance(exc, exception.StorageError) and "File exists" in str(exc)
