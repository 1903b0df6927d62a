"""The libvirt compute driver: spawn, destroy and power instances; list and describe them.

``LibvirtDriver(conf)`` does what Nova's libvirt driver does for the disk side
of an instance. A spawn travels: the image cache (fetch once per host,
checked, converted) -> the image backend (disks made and measured) -> the
tuning policy (facts -> settings with reasons) -> :mod:`.guest` (the domain
config) -> libvirt; :mod:`.spawn` holds the steps and their undo.

State lives in the instance directories (:mod:`.store`, :mod:`.record`),
not in the process; :mod:`.domains` defines a known instance again when
libvirt does not know its domain (the test driver forgets them between
processes).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent import assembly, loader
from nova_disk_tuning.agent.domains import Domains
from nova_disk_tuning.agent.imagebackend.base import ImageBackend
from nova_disk_tuning.agent.instance import Flavor, ImageMeta, Instance
from nova_disk_tuning.agent.record import BUILDING, CREATED, InstanceRecord
from nova_disk_tuning.agent.spawn import (
    Progress,
    Spawn,
    SpawnRequest,
    SpawnResult,
    Undo,
    now,
)
from nova_disk_tuning.agent.store import InstanceStore
from nova_disk_tuning.common import locks, signals
from nova_disk_tuning.conf import lock_wait_timeout
from nova_disk_tuning.host import Host
from nova_disk_tuning.images.cache import ImageCache
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.policy import iothreads
from nova_disk_tuning.policy.facts import DiskFacts
from nova_disk_tuning.policy.result import GuestTuning
from nova_disk_tuning.storage.probe import StorageProbe

LOG = logging.getLogger(__name__)


class LibvirtDriver:
    """A Nova-style compute driver for libvirt at ``[libvirt] connection_uri``."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        host: Host | None = None,
        image_cache: ImageCache | None = None,
        probe: StorageProbe | None = None,
    ) -> None:
        self.conf = conf
        self.host = host or Host(conf)
        # One probe and one qemu-img for the cache, the backends and the
        # volume drivers: what a file system or qemu-img can do is probed once
        # per driver, not once per disk. An injected cache brings its own.
        self.qemu_img: QemuImg = image_cache.qemu_img if image_cache else QemuImg(conf, probe=probe)
        self.probe: StorageProbe = self.qemu_img.probe
        self.image_cache = image_cache or ImageCache(conf, qemu_img=self.qemu_img)
        self.store = InstanceStore(conf)
        self.domains = Domains(self.host, self.store)

    def _lock(self, name: str) -> Any:
        return locks.external_lock(
            f"instance-{name}",
            os.path.join(self.store.root, "locks"),
            what=f"instance {name} (another spawn or destroy of it runs)",
            timeout=lock_wait_timeout(self.conf),
        )

    def backend(self, name: str | None = None) -> ImageBackend:
        """The image backend ``name`` (default: ``[libvirt] images_type``'s)."""
        cls = loader.image_backend(self.conf, name)
        return cls(self.conf, qemu_img=self.qemu_img, probe=self.probe)

    # -- spawn -----------------------------------------------------------------------

    def spawn(
        self,
        instance: Instance,
        image: ImageMeta,
        flavor: Flavor,
        block_device_info: Any = None,
        start: bool = False,
        progress: Progress | None = None,
    ) -> SpawnResult:
        """Create the disks, define the domain and optionally start it (see :mod:`.spawn`)."""
        started = time.monotonic()
        request = SpawnRequest(instance, image, flavor, block_device_info, start)
        # What can be checked is checked before anything is fetched or made:
        # images_type and the tools its backend runs, the flavor's extra specs.
        backend = self.backend()
        backend.check_host()
        iothreads.requested_iothreads(self.conf, flavor.extra_specs)
        self.store.check_root()
        with self._lock(instance.name):
            if self.store.exists(instance.name):
                raise exception.InstanceExists(name=instance.name)
            self.domains.refuse_foreign(instance.name, instance.uuid)
            # Claimed and its undo registered as one step: no signal in between.
            with signals.deferred():
                claim = self.store.claim(
                    InstanceRecord(
                        name=instance.name,
                        uuid=instance.uuid,
                        created_at=now(),
                        connection_uri=self.host.uri,
                        flavor=flavor.to_dict(),
                        image=image.to_dict(),
                        image_backend=loader.image_backend_name(self.conf),
                    )
                )
                undo = Undo(instance.name)
                # Its disks go with it, as the record lists them (announced
                # before each was made): a signal at any point leaves nothing.
                undo.push(
                    f"instance directory {claim.directory} and its disks",
                    lambda: self._remove(claim.record),
                )
            try:
                # The base image stays in use (safe from `cache prune`) until
                # every disk made from it exists.
                with contextlib.ExitStack() as hold:
                    result = Spawn(self, request, claim, undo, backend).run(hold, progress)
            except BaseException:
                undo.run()
                raise
            finally:
                claim.release()
        result.seconds = time.monotonic() - started
        LOG.info("Instance %s: spawned in %.2f s", instance.name, result.seconds)
        return result

    # -- destroy ---------------------------------------------------------------------

    def destroy(self, instance_name: str, destroy_disks: bool = True) -> None:
        """Stop and undefine the domain, disconnect volumes, remove disks and directory.

        With ``destroy_disks=False`` the instance directory (disks,
        libvirt.xml, record) stays, and the domain can be defined again from
        it: what Nova does for a move or an evacuation. An instance whose
        spawn died (``building, process gone``) or whose record is broken is
        removed too; one still being spawned is refused.
        """
        found = self.store.find(instance_name)
        self._refuse_live_spawn(found)
        # Locked by the instance's name, as spawn locks it, whatever was typed.
        with self._lock(found.name):
            record = self.store.find(instance_name)
            self._refuse_live_spawn(record)
            domain = self.domains.lookup(record.uuid)
            if domain is not None:
                self.domains.stop(domain)
                self.domains.undefine(domain)
                LOG.info("Instance %s: domain undefined", instance_name)
            for volume in record.volumes:
                # Detached from the guest with the domain; the volume itself
                # and its host connection belong to Cinder and os-brick.
                LOG.info(
                    "Instance %s: %s volume %s detached (the volume is kept)",
                    instance_name,
                    volume["driver_volume_type"],
                    volume["target"],
                )
            directory = self.store.instance_dir(record.uuid)
            if not destroy_disks:
                LOG.info(
                    "Instance %s: disks kept in %s (destroy_disks=False)", instance_name, directory
                )
                return
            self._remove(record)
            LOG.info("Instance %s: instance directory %s removed", instance_name, directory)

    def _remove(self, record: InstanceRecord) -> None:
        """Remove the disks ``record`` lists (volumes excepted), then its directory."""
        for entry in record.disks:
            if entry.kind == "volume":
                continue
            # The backend that made the disk, whatever images_type says now.
            self.backend(entry.backend or record.image_backend).destroy(entry.removable())
            where = entry.path or ", ".join(entry.created)
            LOG.info("Instance %s: removed %s disk %s", record.name, entry.kind, where)
        self.store.remove(record.uuid)

    def _refuse_live_spawn(self, record: InstanceRecord) -> None:
        if record.state == BUILDING and self.store.owner_alive(record.uuid):
            raise exception.InstanceNotReady(
                name=record.name,
                state="being spawned",
                what=f"process {record.pid} is still creating it; wait for it to "
                "finish (or stop that process), then destroy it",
            )

    def _created(self, name: str) -> InstanceRecord:
        """The record of a finished instance; a building or broken one is refused."""
        record = self.store.find(name)
        state = self.store.status(record)
        if state != CREATED:
            raise exception.InstanceNotReady(
                name=record.name,
                state=state,
                what=record.problem
                or f"its spawn did not finish. `nova-disk-tuning destroy {record.name}` "
                "removes what it made",
            )
        return record

    # -- power -----------------------------------------------------------------------

    def _domain(self, name: str) -> Any:
        return self.domains.ensure_defined(self._created(name))

    def power_on(self, instance_name: str) -> None:
        domain = self._domain(instance_name)
        if domain.isActive():
            LOG.info("Instance %s: already running", instance_name)
            return
        assembly.check_native_io(domain.XMLDesc(0))
        self.domains.start(instance_name, domain)

    def power_off(
        self, instance_name: str, timeout: float = 0.0, retry_interval: float = 1.0
    ) -> None:
        """Ask the guest to shut down for ``timeout`` seconds, then pull the plug."""
        domain = self._domain(instance_name)
        if not domain.isActive():
            LOG.info("Instance %s: already shut off", instance_name)
            return
        if timeout > 0:
            self.domains.shutdown(instance_name, domain)
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
        self.domains.stop(domain)
        LOG.info("Instance %s: powered off", instance_name)

    # -- inspection ------------------------------------------------------------------

    def list_instances(self) -> list[str]:
        """Names of this plugin's instances.

        A finished instance whose domain libvirt lost is defined again here
        (as on every lookup), so a new process on the test driver sees it.
        """
        names = []
        for record in self.store.records():
            if record.state == CREATED:
                self.domains.ensure_defined(record)
            names.append(record.name)
        return names

    def instances(self) -> list[dict[str, Any]]:
        """One summary per instance: name, uuid, state, flavor, disks, image."""
        return [
            {
                "name": record.name,
                "uuid": record.uuid,
                "state": self._state(record),
                "vcpus": record.flavor.get("vcpus"),
                "memory_mb": record.flavor.get("memory_mb"),
                "disks": [entry.target for entry in record.disks],
                "image": record.image.get("id"),
            }
            for record in self.store.records()
        ]

    def _state(self, record: InstanceRecord) -> str:
        """libvirt's state of a finished instance, else how far its spawn got.

        One unusable instance (a corrupt libvirt.xml) shows as such and does
        not keep the others from being listed.
        """
        state = self.store.status(record)
        if state != CREATED:
            return state
        try:
            return self.domains.power_state(record)
        except exception.NovaDiskTuningException as exc:
            where = self.store.xml_path(record.uuid)
            LOG.warning("Instance %s (%s): %s", record.name, where, exc)
            return f"error: {where}: {exc}"

    def ensure_defined(self, record: InstanceRecord) -> Any:
        """The libvirt domain of a finished instance, defined again if libvirt lost it."""
        return self.domains.ensure_defined(record)

    def get_record(self, instance_name: str) -> InstanceRecord:
        return self._created(instance_name)

    def get_xml(self, instance_name: str) -> str:
        """libvirt's XML of the (defined) domain."""
        xml: str = self._domain(instance_name).XMLDesc(0)
        return xml

    def get_tuning(self, instance_name: str) -> tuple[GuestTuning, list[DiskFacts]]:
        """The tuning decided at spawn, and the disk facts it was decided from."""
        record = self._created(instance_name)
        return record.guest_tuning(), record.disk_facts()

    def get_instance_disk_info(self, instance_name: str) -> list[dict[str, Any]]:
        """Nova's disk info: per disk its type, path, sizes and backing file, measured now."""
        record = self._created(instance_name)
        self.domains.ensure_defined(record)
        tuning = {d.disk: d for d in record.guest_tuning().disks}
        info = []
        for entry in record.disks:
            disk_size = None
            if entry.path and entry.source_type == "file":
                with contextlib.suppress(FileNotFoundError):
                    disk_size = os.stat(entry.path).st_blocks * 512
            virt = entry.facts.get("size")
            decided = tuning.get(entry.target)
            info.append(
                {
                    "target": entry.target,
                    "kind": entry.kind,
                    "type": entry.format,
                    "source_type": entry.source_type,
                    "path": entry.path,
                    "virt_disk_size": virt,
                    "disk_size": disk_size,
                    "over_committed_disk_size": (
                        max(virt - disk_size, 0) if virt and disk_size is not None else 0
                    ),
                    "backing_file": entry.facts.get("backing_file"),
                    "cache": decided.cache.value if decided else None,
                    "io": decided.io.value if decided else None,
                }
            )
        return info
