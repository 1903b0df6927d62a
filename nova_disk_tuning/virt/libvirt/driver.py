"""The libvirt compute driver: spawn, destroy, power and inspect instances.

``LibvirtDriver(conf)`` does what Nova's libvirt driver does for the disk side
of an instance, in this order:

1. fetch the base image once per host through the image cache
   (:class:`~nova_disk_tuning.images.cache.ImageCache`), with progress;
2. create the root, ephemeral and swap disks with the configured image
   backend (``[libvirt] images_type``) and connect volumes with the volume
   driver named by each ``connection_info['driver_volume_type']``;
3. hand every disk's measured facts to the tuning policy
   (``tuning.tune_guest``) and apply its decisions;
4. assemble the guest XML (:mod:`.guest_builder`), refuse ``io='native'``
   without an O_DIRECT cache, write ``libvirt.xml`` and ``instance.json``
   into the instance directory, define the domain with
   ``VIR_DOMAIN_DEFINE_VALIDATE`` (libvirt's RelaxNG schema) and optionally
   start it.

A failure at any step undoes what this spawn did, newest first: the domain
definition, the volume connections, the disks (through the backend, so LVM
volumes are wiped per ``volume_clear``) and the instance directory. Other
instances and the image cache are never touched.

State lives in the instance directories (:mod:`.instance`), not in the
process. Every lookup goes through :meth:`LibvirtDriver.ensure_defined`,
which defines a known instance again from its ``libvirt.xml`` when libvirt
does not know its domain: libvirt's test driver (``test:///default``) forgets
every domain when the process that opened it exits, and a host whose libvirt
lost a definition gets it back the same way. A domain defined again is shut
off: the test driver cannot keep a guest running across processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from oslo_concurrency import lockutils
from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.images.cache import CachedImage, ImageCache
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.storage.probe import StorageProbe
from nova_disk_tuning.virt.libvirt import guest as guest_builder
from nova_disk_tuning.virt.libvirt import instance as instance_mod
from nova_disk_tuning.virt.libvirt import loader
from nova_disk_tuning.virt.libvirt.guest import GuestDisk
from nova_disk_tuning.virt.libvirt.host import Host
from nova_disk_tuning.virt.libvirt.instance import Flavor, ImageMeta, Instance
from nova_disk_tuning.virt.libvirt.store import InstanceStore, SpawnClaim
from nova_disk_tuning.virt.libvirt.tuning import iothreads
from nova_disk_tuning.virt.libvirt.tuning.policy import GuestTuning, tune_guest

LOG = logging.getLogger(__name__)

GiB = instance_mod.GiB
MiB = instance_mod.MiB
LOCK_PREFIX = "nova-disk-tuning-"
# libvirt's domain states, by number (virDomainState), as list/show print them.
POWER_STATES = {
    0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown",
    5: "shutoff", 6: "crashed", 7: "pmsuspended",
}  # fmt: skip
_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd"}

Progress = Callable[[float], None]


@dataclasses.dataclass
class SpawnResult:
    """What :meth:`LibvirtDriver.spawn` made: the record, the XML and the tuning."""

    record: dict[str, Any]
    xml: str
    tuning: GuestTuning
    image: CachedImage
    seconds: float


class _Undo:
    """What a spawn created, undone newest first if the spawn fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, step: Callable[[], None]) -> None:
        self._steps.append((what, step))

    def run(self) -> None:
        for what, step in reversed(self._steps):
            try:
                step()
                LOG.info("Instance %s: spawn failed, removed %s", self.name, what)
            except Exception as exc:  # keep undoing the rest
                LOG.error(
                    "Instance %s: spawn failed and %s could not be removed: %s. Remove it by hand.",
                    self.name,
                    what,
                    exc,
                )
        self._steps.clear()


class LibvirtDriver:
    """A Nova-style compute driver for libvirt at ``[libvirt] connection_uri``."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        host: Host | None = None,
        image_cache: ImageCache | None = None,
    ) -> None:
        self.conf = conf
        self.host = host or Host(conf)
        # One probe and one qemu-img for the cache, the backends and the
        # volume drivers: what a file system or qemu-img can do is probed once
        # per driver, not once per disk.
        self.probe = StorageProbe()
        self.qemu_img = QemuImg(conf, probe=self.probe)
        self.image_cache = image_cache or ImageCache(conf, qemu_img=self.qemu_img)
        self.store = InstanceStore(conf)

    # -- plumbing ------------------------------------------------------------------

    @property
    def _conn(self) -> Any:
        return self.host.get_connection()

    def _lock(self, name: str) -> Any:
        lock_dir = os.path.join(self.store.root, "locks")
        os.makedirs(lock_dir, exist_ok=True)
        return lockutils.lock(
            f"instance-{name}", lock_file_prefix=LOCK_PREFIX, external=True, lock_path=lock_dir
        )

    def _libvirt_error(self, what: str, exc: Exception) -> exception.HypervisorError:
        message = getattr(exc, "get_error_message", lambda: None)() or str(exc)
        return exception.HypervisorError(uri=self.host.uri, reason=f"{what}: {message}")

    def _lookup(self, uuid: str) -> Any | None:
        import libvirt

        try:
            return self._conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self._libvirt_error(f"looking up domain {uuid}", exc) from None

    def _define(self, xml: str, name: str) -> Any:
        import libvirt

        guest_builder.check_native_io(xml)
        try:
            return self._conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as exc:
            raise self._libvirt_error(
                f"defining instance {name} (the XML is in its instance directory)", exc
            ) from None

    def ensure_defined(self, record: Mapping[str, Any]) -> Any:
        """The domain of a known instance, defined again from libvirt.xml if missing."""
        domain = self._lookup(record["uuid"])
        if domain is not None:
            return domain
        xml = self.store.read_xml(record["uuid"])
        domain = self._define(xml, record["name"])
        LOG.info(
            "Instance %s: libvirt at %s did not know its domain (the test driver forgets "
            "domains between processes); defined it again from %s",
            record["name"],
            self.host.uri,
            self.store.xml_path(record["uuid"]),
        )
        return domain

    def _domain(self, name: str) -> tuple[dict[str, Any], Any]:
        record = self._created(name)
        return record, self.ensure_defined(record)

    # -- spawn -----------------------------------------------------------------------

    def spawn(
        self,
        instance: Instance,
        image: ImageMeta,
        flavor: Flavor,
        block_device_info: Mapping[str, Any] | None = None,
        start: bool = False,
        progress: Progress | None = None,
    ) -> SpawnResult:
        """Create the disks, define the domain and optionally start it.

        ``block_device_info`` is Nova's: ``{"block_device_mapping": [{
        "connection_info": {...}, "mount_device": "/dev/vdc" (optional),
        "disk_bus": "virtio" (optional)}, ...]}``.
        """
        started = time.monotonic()
        # What can be checked is checked before anything is fetched or made:
        # images_type and the tools its backend runs, the flavor's extra specs.
        backend = self._backend(loader.image_backend(self.conf))
        backend.check_host()
        iothreads.requested_iothreads(self.conf, flavor.extra_specs)
        self.store.check_root()
        with self._lock(instance.name):
            if self.store.exists(instance.name):
                raise exception.InstanceExists(name=instance.name)
            self._refuse_foreign_domain(instance)
            claim = self.store.claim(
                instance.name,
                instance.uuid,
                {
                    "version": instance_mod.RECORD_VERSION,
                    "created_at": _now(),
                    "connection_uri": self.host.uri,
                    "flavor": flavor.to_dict(),
                    "image": image.to_dict(),
                    "disks": [],
                    "volumes": [],
                },
            )
            undo = _Undo(instance.name)
            undo.push(
                f"instance directory {claim.directory}", lambda: self.store.remove(instance.uuid)
            )
            try:
                # The base image stays in use (safe from `cache prune`) until
                # every disk made from it exists.
                with contextlib.ExitStack() as hold:
                    result = self._spawn(
                        instance, image, flavor, block_device_info, start, progress, undo, claim,
                        backend, hold,
                    )  # fmt: skip
            except BaseException:
                undo.run()
                raise
            finally:
                claim.release()
        result.seconds = time.monotonic() - started
        LOG.info("Instance %s: spawned in %.2f s", instance.name, result.seconds)
        return result

    def _refuse_foreign_domain(self, instance: Instance) -> None:
        import libvirt

        for lookup, key in (
            (self._conn.lookupByName, instance.name),
            (self._conn.lookupByUUIDString, instance.uuid),
        ):
            try:
                lookup(key)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue
                raise self._libvirt_error(f"looking up domain {key}", exc) from None
            raise exception.InstanceExists(
                name=f"{instance.name} (libvirt at {self.host.uri} has a domain {key!r} "
                "that this plugin did not create)"
            )

    def _spawn(
        self,
        instance: Instance,
        image: ImageMeta,
        flavor: Flavor,
        block_device_info: Mapping[str, Any] | None,
        start: bool,
        progress: Progress | None,
        undo: _Undo,
        claim: SpawnClaim,
        backend: Any,
        hold: contextlib.ExitStack,
    ) -> SpawnResult:
        name, uuid = instance.name, instance.uuid
        instance_dir = claim.directory
        bus = image.disk_bus
        targets = _TargetNames()
        root_target = targets.next(bus)
        ephemeral_target = targets.next(bus) if flavor.ephemeral_gb else None
        swap_target = targets.next(bus) if flavor.swap_mb else None
        # Volumes are attached already (os-brick's job): measuring them first
        # means a missing device or an unknown driver fails before the fetch.
        volumes, volume_disks = [], []
        for mapping in (block_device_info or {}).get("block_device_mapping", []):
            volume_disk, volume_entry = self._connect_volume(name, mapping, targets, bus, undo)
            volume_disks.append(volume_disk)
            volumes.append(volume_entry)

        max_size = flavor.root_gb * GiB if flavor.root_gb else None
        cached = self.image_cache.fetch(
            image.id,
            image.source,
            image.disk_format,
            max_virtual_size=max_size,
            progress=progress,
            hold=hold,
        )
        LOG.info(
            "Instance %s: base image %s %s (%s)",
            name,
            image.id,
            "fetched and cached" if cached.created else "reused from the cache",
            cached.path,
        )
        kernel, ramdisk = self._copy_boot_files(image, instance_dir)

        backend_name = loader.image_backend_name(self.conf)
        disks: list[tuple[str, GuestDisk]] = []

        def created(kind: str, disk: GuestDisk) -> None:
            disks.append((kind, disk))
            claim.add_disk(_disk_entry(kind, disk, backend_name))
            undo.push(
                f"{kind} disk {disk.facts.path or disk.facts.name}",
                lambda: backend.destroy([disk]),
            )
            for note in disk.notes:
                LOG.info("Instance %s: %s disk %s: %s", name, kind, disk.facts.name, note)

        if flavor.root_gb:
            LOG.info(
                "Instance %s: root disk %d GiB (flavor root_gb); the image is %d bytes",
                name,
                flavor.root_gb,
                cached.virtual_size,
            )
        root_size = flavor.root_gb * GiB or None
        created("root", backend.create_root(instance_dir, root_target, cached, root_size, bus))
        if ephemeral_target:
            disk = backend.create_blank(
                instance_dir, ephemeral_target, flavor.ephemeral_gb * GiB, "ephemeral", bus
            )
            created("ephemeral", disk)
        if swap_target:
            disk = backend.create_blank(
                instance_dir, swap_target, flavor.swap_mb * MiB, "swap", bus
            )
            created("swap", disk)
        disks.extend(("volume", disk) for disk in volume_disks)

        facts = [disk.facts for _, disk in disks]
        caps = self.host.caps()
        tuning = tune_guest(facts, caps, self.conf, flavor.vcpus, flavor.extra_specs)
        self._log_tuning(name, tuning)
        guest = guest_builder.build_guest(
            self.conf,
            name=name,
            uuid=uuid,
            vcpus=flavor.vcpus,
            memory_mb=flavor.memory_mb,
            disks=[disk for _, disk in disks],
            tuning=tuning,
            console_path=self.store.console_path(uuid),
            kernel=kernel,
            ramdisk=ramdisk,
            cmdline=image.cmdline,
        )
        xml = guest.to_xml()
        record = {
            "version": instance_mod.RECORD_VERSION,
            "name": name,
            "uuid": uuid,
            "created_at": claim.record["created_at"],
            "connection_uri": self.host.uri,
            "flavor": flavor.to_dict(),
            "image": {
                **image.to_dict(),
                "cached_path": cached.path,
                "cached_format": cached.format,
                "virtual_size": cached.virtual_size,
                "cache_hit": not cached.created,
            },
            "kernel": kernel,
            "ramdisk": ramdisk,
            "image_backend": backend_name,
            "disks": [_disk_entry(kind, disk, backend_name) for kind, disk in disks],
            "volumes": volumes,
            "tuning": tuning.to_dict(),
        }
        self.store.write(record, xml)
        domain = self._define(xml, name)
        undo.push(f"domain definition {name}", lambda: self._undefine(domain))
        LOG.info("Instance %s: defined at %s (uuid %s)", name, self.host.uri, uuid)
        if start:
            self._start(name, domain)
            undo.push(f"running domain {name}", lambda: self._stop(domain))
        return SpawnResult(record, xml, tuning, cached, 0.0)

    def _copy_boot_files(
        self, image: ImageMeta, instance_dir: str
    ) -> tuple[str | None, str | None]:
        """Copy kernel and ramdisk into the instance directory, as Nova does."""
        copies: list[str | None] = []
        for what, source in (("kernel", image.kernel), ("ramdisk", image.ramdisk)):
            if not source:
                copies.append(None)
                continue
            target = os.path.join(instance_dir, what)
            try:
                shutil.copyfile(source, target)
            except FileNotFoundError:
                raise exception.ImageNotFound(path=source) from None
            copies.append(target)
        return copies[0], copies[1]

    def _connect_volume(
        self,
        name: str,
        mapping: Mapping[str, Any],
        targets: _TargetNames,
        default_bus: str,
        undo: _Undo,
    ) -> tuple[GuestDisk, dict[str, Any]]:
        info = mapping.get("connection_info")
        if not isinstance(info, Mapping) or "driver_volume_type" not in info:
            raise exception.VolumeDriverError(
                driver="?",
                reason=f"instance {name}: a block device mapping has no "
                "connection_info['driver_volume_type']; give Cinder's connection_info "
                f"(got {mapping!r})",
            )
        bus = mapping.get("disk_bus") or default_bus
        mount = mapping.get("mount_device")
        target = targets.take(os.path.basename(mount)) if mount else targets.next(bus)
        volume_type = info["driver_volume_type"]
        driver = loader.volume_driver(volume_type)(self.conf, probe=self.probe)
        # The volume is connected to the host already (os-brick's job): a
        # failed spawn has nothing to undo for it and never deletes it.
        disk = driver.connect(info, target, bus)
        LOG.info("Instance %s: connected %s volume as %s", name, volume_type, target)
        return disk, {
            "target": target,
            "bus": bus,
            "driver_volume_type": volume_type,
            "connection_info": dict(info),
        }

    def _log_tuning(self, name: str, tuning: GuestTuning) -> None:
        LOG.info(
            "Instance %s: iothreads=%s (%s)",
            name,
            tuning.iothreads.count.value,
            tuning.iothreads.count.reason,
        )
        for disk in tuning.disks:
            for setting, decision in disk.settings():
                if decision.value is None and setting in ("iothread_queues", "discard_no_unref"):
                    continue
                LOG.info(
                    "Instance %s disk %s: %s=%s (%s)",
                    name,
                    disk.disk,
                    setting,
                    "-" if decision.value is None else decision.value,
                    decision.reason,
                )

    # -- destroy ---------------------------------------------------------------------

    def destroy(self, instance_name: str, destroy_disks: bool = True) -> None:
        """Stop and undefine the domain, disconnect volumes, remove disks and directory.

        With ``destroy_disks=False`` the instance directory (disks,
        libvirt.xml, record) stays, and the domain can be defined again from
        it: what Nova does for a move or an evacuation.
        """
        self._refuse_live_spawn(self.store.find(instance_name))
        with self._lock(instance_name):
            record = self.store.find(instance_name)
            self._refuse_live_spawn(record)
            domain = self._lookup(record["uuid"])
            if domain is not None:
                self._stop(domain)
                self._undefine(domain)
                LOG.info("Instance %s: domain undefined", instance_name)
            for volume in record.get("volumes", []):
                # Detached from the guest with the domain; the volume itself
                # and its host connection belong to Cinder and os-brick.
                LOG.info(
                    "Instance %s: %s volume %s detached (the volume is kept)",
                    instance_name,
                    volume["driver_volume_type"],
                    volume["target"],
                )
            if not destroy_disks:
                LOG.info(
                    "Instance %s: disks kept in %s (destroy_disks=False)",
                    instance_name,
                    self.store.instance_dir(record["uuid"]),
                )
                return
            self._destroy_disks(record)
            self.store.remove(record["uuid"])
            LOG.info("Instance %s: instance directory removed", instance_name)

    def _refuse_live_spawn(self, record: Mapping[str, Any]) -> None:
        if record.get("state") == "building" and self.store.owner_alive(record["uuid"]):
            raise exception.InstanceNotReady(
                name=record["name"],
                state="being spawned",
                what=f"process {record.get('pid')} is still creating it; wait for it to "
                "finish (or stop that process), then destroy it",
            )

    def _created(self, name: str) -> dict[str, Any]:
        """The record of a finished instance; a building or broken one is refused."""
        record = self.store.find(name)
        state = self.store.status(record)
        if state != "created":
            raise exception.InstanceNotReady(
                name=record["name"],
                state=state,
                what=record.get("problem")
                or "its spawn did not finish. `nova-disk-tuning destroy "
                f"{record['name']}` removes what it made",
            )
        return record

    def _destroy_disks(self, record: Mapping[str, Any]) -> None:
        backends: dict[str, Any] = {}
        for entry in record.get("disks", []):
            if entry["kind"] == "volume":
                continue
            name = entry.get("backend") or record.get("image_backend")
            if name not in backends:
                # The backend that made the disk, whatever images_type says now.
                backends[name] = self._backend(
                    loader.load(
                        loader.IMAGE_BACKENDS,
                        name,
                        "image backend",
                        f"the record of {record['name']}",
                    )
                )
            backends[name].destroy([_disk_from_entry(entry)])
            LOG.info(
                "Instance %s: removed %s disk %s", record["name"], entry["kind"], entry["path"]
            )

    def _backend(self, cls: type) -> Any:
        return cls(self.conf, qemu_img=self.qemu_img, probe=self.probe)

    def _undefine(self, domain: Any) -> None:
        import libvirt

        try:
            domain.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise self._libvirt_error("undefining the domain", exc) from None

    def _stop(self, domain: Any) -> None:
        import libvirt

        try:
            if domain.isActive():
                domain.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (
                libvirt.VIR_ERR_NO_DOMAIN,
                libvirt.VIR_ERR_OPERATION_INVALID,
            ):
                raise self._libvirt_error("stopping the domain", exc) from None

    def _start(self, name: str, domain: Any) -> None:
        import libvirt

        try:
            domain.create()
        except libvirt.libvirtError as exc:
            raise self._libvirt_error(
                f"starting instance {name} (the console log is "
                f"{self.store.console_path(domain.UUIDString())})",
                exc,
            ) from None
        LOG.info("Instance %s: started", name)

    # -- power -----------------------------------------------------------------------

    def power_on(self, instance_name: str) -> None:
        _record, domain = self._domain(instance_name)
        if domain.isActive():
            LOG.info("Instance %s: already running", instance_name)
            return
        guest_builder.check_native_io(domain.XMLDesc(0))
        self._start(instance_name, domain)

    def power_off(
        self, instance_name: str, timeout: float = 0.0, retry_interval: float = 1.0
    ) -> None:
        """Ask the guest to shut down for ``timeout`` seconds, then pull the plug."""
        import libvirt

        _record, domain = self._domain(instance_name)
        if not domain.isActive():
            LOG.info("Instance %s: already shut off", instance_name)
            return
        if timeout > 0:
            try:
                domain.shutdown()
            except libvirt.libvirtError as exc:
                LOG.info("Instance %s: clean shutdown refused (%s)", instance_name, exc)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and domain.isActive():
                time.sleep(retry_interval)
            if not domain.isActive():
                LOG.info("Instance %s: shut down cleanly", instance_name)
                return
            LOG.warning(
                "Instance %s: did not shut down within %.0f s; destroying it",
                instance_name,
                timeout,
            )
        self._stop(domain)
        LOG.info("Instance %s: powered off", instance_name)

    # -- inspection ------------------------------------------------------------------

    def list_instances(self) -> list[str]:
        """Names of this plugin's instances (each defined again if libvirt lost it)."""
        names = []
        for record in self.store.records():
            if record.get("state", "created") == "created":
                self.ensure_defined(record)
            names.append(record["name"])
        return names

    def instances(self) -> list[dict[str, Any]]:
        """One summary per instance: name, uuid, state, flavor, disks."""
        rows = []
        for record in self.store.records():
            rows.append(
                {
                    "name": record["name"],
                    "uuid": record["uuid"],
                    "state": self._power_state(record),
                    "vcpus": record.get("flavor", {}).get("vcpus"),
                    "memory_mb": record.get("flavor", {}).get("memory_mb"),
                    "disks": [d.get("target") for d in record.get("disks", [])],
                    "image": record.get("image", {}).get("id"),
                }
            )
        return rows

    def _power_state(self, record: dict[str, Any]) -> str:
        """libvirt's state of a finished instance, else how far its spawn got.

        One unusable instance (a corrupt libvirt.xml) shows as such and does
        not keep the others from being listed.
        """
        state = self.store.status(record)
        if state != "created":
            return state
        try:
            domain = self.ensure_defined(record)
            return POWER_STATES.get(domain.state()[0], "unknown")
        except exception.NovaDiskTuningException as exc:
            where = self.store.xml_path(record["uuid"])
            LOG.warning("Instance %s (%s): %s", record["name"], where, exc)
            return f"error: {where}: {exc}"

    def get_record(self, instance_name: str) -> dict[str, Any]:
        return self._created(instance_name)

    def get_xml(self, instance_name: str) -> str:
        """libvirt's XML of the (defined) domain."""
        _, domain = self._domain(instance_name)
        return domain.XMLDesc(0)

    def get_tuning(self, instance_name: str) -> tuple[GuestTuning, list[Any]]:
        """The tuning decided at spawn, and the disk facts it was decided from."""
        record = self._created(instance_name)
        facts = instance_mod.facts_from_dicts([d["facts"] for d in record["disks"]])
        return instance_mod.tuning_from_dict(record["tuning"]), facts

    def get_instance_disk_info(self, instance_name: str) -> list[dict[str, Any]]:
        """Nova's disk info: per disk its type, path, sizes and backing file, measured now."""
        record = self._created(instance_name)
        self.ensure_defined(record)
        tuning = {d["disk"]: d for d in record["tuning"]["disks"]}
        info = []
        for entry in record["disks"]:
            facts = entry["facts"]
            path = entry["path"]
            disk_size = None
            if path and entry["source_type"] == "file":
                try:
                    disk_size = os.stat(path).st_blocks * 512
                except FileNotFoundError:
                    disk_size = None
            virt = facts.get("size")
            info.append(
                {
                    "target": entry["target"],
                    "kind": entry["kind"],
                    "type": entry["format"],
                    "source_type": entry["source_type"],
                    "path": path,
                    "virt_disk_size": virt,
                    "disk_size": disk_size,
                    "over_committed_disk_size": (
                        max(virt - disk_size, 0) if virt and disk_size is not None else 0
                    ),
                    "backing_file": facts.get("backing_file"),
                    "cache": tuning.get(entry["target"], {}).get("cache", {}).get("value"),
                    "io": tuning.get(entry["target"], {}).get("io", {}).get("value"),
                }
            )
        return info


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _TargetNames:
    """Free target names per bus: vda, vdb, ... / sda, sdb, ..."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def next(self, bus: str) -> str:
        prefix = _BUS_PREFIX.get(bus)
        if prefix is None:
            raise exception.InvalidConfig(
                reason=f"disk bus {bus!r} is not supported; use one of {', '.join(_BUS_PREFIX)}"
            )
        for letter in "abcdefghijklmnopqrstuvwxyz":
            if prefix + letter not in self.used:
                return self.take(prefix + letter)
        raise exception.InvalidConfig(reason=f"more than 26 disks on bus {bus}")

    def take(self, name: str) -> str:
        if name in self.used:
            raise exception.InvalidDiskConfig(
                disk=name, reason="target already used by another disk of this instance"
            )
        self.used.add(name)
        return name


def _disk_entry(kind: str, disk: GuestDisk, backend: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "target": disk.facts.name,
        "bus": disk.config.target_bus,
        "path": disk.facts.path,
        "format": disk.facts.format,
        "source_type": disk.facts.source_type,
        "backend": None if kind == "volume" else backend,
        "created": list(disk.created),
        "notes": list(disk.notes),
        "facts": dataclasses.asdict(disk.facts),
    }


def _disk_from_entry(entry: Mapping[str, Any]) -> GuestDisk:
    """A GuestDisk rebuilt from a record, for the backend's destroy()."""
    from nova_disk_tuning.virt.libvirt.domxml import LibvirtConfigGuestDisk

    facts = instance_mod.facts_from_dicts([entry["facts"]])[0]
    config = LibvirtConfigGuestDisk(
        source_type=entry["source_type"],
        source_path=entry["path"],
        driver_format=entry["format"],
        target_dev=entry["target"],
        target_bus=entry["bus"],
    )
    return GuestDisk(config, facts, tuple(entry.get("created", ())), tuple(entry.get("notes", ())))


def block_device_info_from_files(paths: Sequence[str]) -> dict[str, Any]:
    """Nova's block_device_info from Cinder connection_info JSON files."""
    import json

    mappings = []
    for path in paths:
        try:
            with open(path) as handle:
                info = json.load(handle)
        except OSError as exc:
            raise exception.InvalidConfig(
                reason=f"cannot read volume connection_info {path}: {exc.strerror}"
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise exception.InvalidConfig(
                reason=f"volume connection_info {path} is not JSON: {exc}"
            ) from None
        if not isinstance(info, dict):
            raise exception.InvalidConfig(
                reason=f"volume connection_info {path} holds a JSON {type(info).__name__}; "
                "give Cinder's connection_info object"
            )
        mapping = info if "connection_info" in info else {"connection_info": info}
        mappings.append(mapping)
    return {"block_device_mapping": mappings}
