"""One spawn, step by step, undone newest first if any step fails.

1. check what can be checked before any work: the image backend and the
   tools it runs, the flavor's extra specs, the instances path;
2. claim the instance directory (a ``building`` record, see :mod:`.store`);
3. measure the volumes (connected already by os-brick) and name every target;
4. fetch the base image once per host through the image cache, held in use;
5. create the root, ephemeral and swap disks with the image backend, each
   recorded (by the names the backend announces) before it is made;
6. hand every disk's measured facts to the tuning policy, assemble the guest
   (:mod:`.guest`), write ``libvirt.xml`` and the finished record, define the
   domain with libvirt's schema validation and optionally start it.

A failure at any step undoes what this spawn did: the domain, the disks
(through the backend, so LVM volumes are wiped per ``volume_clear``) and the
instance directory. Volumes, other instances and the image cache are never
touched. SIGKILL leaves a ``building`` record that ``destroy`` removes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent import assembly, loader
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.agent.imagebackend.base import Announce, ImageBackend
from nova_disk_tuning.agent.instance import Flavor, ImageMeta, Instance
from nova_disk_tuning.agent.record import DiskEntry, InstanceRecord
from nova_disk_tuning.agent.store import SpawnClaim
from nova_disk_tuning.common import signals
from nova_disk_tuning.common.units import GiB, MiB
from nova_disk_tuning.domxml.targets import TargetNames
from nova_disk_tuning.images import fetch
from nova_disk_tuning.images.cache import CachedImage
from nova_disk_tuning.policy.decide import GuestTuning, tune_guest

if TYPE_CHECKING:  # the driver runs a Spawn; a Spawn calls back into its driver
    from nova_disk_tuning.agent.driver import LibvirtDriver

LOG = logging.getLogger(__name__)

Progress = Callable[[float], None]


@dataclasses.dataclass
class SpawnResult:
    """What a spawn made: the record, the XML and the tuning."""

    record: InstanceRecord
    xml: str
    tuning: GuestTuning
    image: CachedImage
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class SpawnRequest:
    """What Nova asks for: the instance, its image and flavor, its volumes."""

    instance: Instance
    image: ImageMeta
    flavor: Flavor
    # Nova's block_device_info: {"block_device_mapping": [{"connection_info":
    # {...}, "mount_device": "/dev/vdc" (optional), "disk_bus": ... }, ...]}
    block_device_info: Mapping[str, Any] | None = None
    start: bool = False


class Undo:
    """What a spawn created, undone newest first if the spawn fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, step: Callable[[], object]) -> None:
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


class Spawn:
    """Steps 3-6 of one spawn, inside a claimed instance directory."""

    def __init__(
        self,
        driver: LibvirtDriver,
        request: SpawnRequest,
        claim: SpawnClaim,
        undo: Undo,
        backend: ImageBackend,
    ) -> None:
        self.driver = driver
        self.request = request
        self.claim = claim
        self.undo = undo
        self.backend = backend
        self.name = request.instance.name
        self.disks: list[tuple[str, GuestDisk]] = []

    def run(self, hold: contextlib.ExitStack, progress: Progress | None) -> SpawnResult:
        backend = self.backend
        image, flavor = self.request.image, self.request.flavor
        bus = image.disk_bus
        targets = TargetNames()
        root, ephemeral = targets.next(bus), targets.next(bus) if flavor.ephemeral_gb else None
        swap = targets.next(bus) if flavor.swap_mb else None
        # Volumes are attached already (os-brick's job): measuring them first
        # means a missing device or an unknown driver fails before the fetch.
        volumes = [
            self._connect_volume(mapping, targets, bus)
            for mapping in (self.request.block_device_info or {}).get("block_device_mapping", [])
        ]
        cached = self.driver.image_cache.fetch(
            image.id,
            image.source,
            image.disk_format,
            max_virtual_size=flavor.root_gb * GiB if flavor.root_gb else None,
            progress=progress,
            hold=hold,
        )
        how = "fetched and cached" if cached.created else "reused from the cache"
        LOG.info("Instance %s: base image %s %s (%s)", self.name, image.id, how, cached.path)
        kernel, ramdisk = self._copy_boot_files()
        directory = self.claim.directory
        root_size = flavor.root_gb * GiB or None
        self._make(
            "root",
            root,
            lambda announce: backend.create_root(
                directory, root, cached, root_size, bus, announce=announce
            ),
        )
        if ephemeral:
            size = flavor.ephemeral_gb * GiB
            self._make(
                "ephemeral",
                ephemeral,
                lambda announce: backend.create_blank(
                    directory, ephemeral, size, "ephemeral", bus, announce=announce
                ),
            )
        if swap:
            self._make(
                "swap",
                swap,
                lambda announce: backend.create_blank(
                    directory, swap, flavor.swap_mb * MiB, "swap", bus, announce=announce
                ),
            )
        self.disks.extend(("volume", disk) for disk, _ in volumes)
        return self._define(cached, kernel, ramdisk, [entry for _, entry in volumes])

    def _make(self, kind: str, target: str, create: Callable[[Announce], GuestDisk]) -> None:
        """Make one disk, recorded by the names its backend announces before making it.

        A failed create has removed what it made (the backend's promise),
        so its announced entry goes from the record; otherwise the entry
        stays until the disk is measured and recorded whole, and a failed
        spawn's undo (or, after a kill, destroy) removes what it names.
        """
        backend = self.claim.record.image_backend

        def announce(names: tuple[str, ...]) -> None:
            self.claim.add_disk(DiskEntry.announced(kind, target, names, backend))

        try:
            disk = create(announce)
        except BaseException:
            self.claim.drop_disk(target)
            raise
        self.disks.append((kind, disk))
        self.claim.add_disk(DiskEntry.of(kind, disk, backend))
        for note in disk.notes:
            LOG.info("Instance %s: %s disk %s: %s", self.name, kind, disk.facts.name, note)

    def _define(
        self,
        cached: CachedImage,
        kernel: str | None,
        ramdisk: str | None,
        volumes: list[dict[str, Any]],
    ) -> SpawnResult:
        driver, request, record = self.driver, self.request, self.claim.record
        facts = [disk.facts for _, disk in self.disks]
        flavor = request.flavor
        tuning = tune_guest(
            facts, driver.host.caps(), driver.conf, flavor.vcpus, flavor.extra_specs
        )
        _log_tuning(self.name, tuning)
        config = assembly.build_guest(
            driver.conf,
            name=self.name,
            uuid=record.uuid,
            vcpus=flavor.vcpus,
            memory_mb=flavor.memory_mb,
            disks=[disk for _, disk in self.disks],
            tuning=tuning,
            console_path=driver.store.console_path(record.uuid),
            kernel=kernel,
            ramdisk=ramdisk,
            cmdline=request.image.cmdline,
        )
        xml = config.to_xml()
        record.image.update(
            cached_path=cached.path,
            cached_format=cached.format,
            virtual_size=cached.virtual_size,
            cache_hit=not cached.created,
        )
        record.kernel, record.ramdisk, record.volumes = kernel, ramdisk, volumes
        record.disks = [DiskEntry.of(kind, disk, record.image_backend) for kind, disk in self.disks]
        record.tuning = tuning.to_dict()
        driver.store.write(record, xml)
        with signals.deferred():  # defined and its undo registered as one step
            domain = driver.domains.define(xml, self.name, checked=True)
            self.undo.push(
                f"domain definition {self.name}", lambda: driver.domains.undefine(domain)
            )
        LOG.info("Instance %s: defined at %s (uuid %s)", self.name, driver.host.uri, record.uuid)
        if request.start:
            with signals.deferred():
                driver.domains.start(self.name, domain)
                self.undo.push(f"running domain {self.name}", lambda: driver.domains.stop(domain))
        return SpawnResult(record, xml, tuning, cached)

    def _copy_boot_files(self) -> tuple[str | None, str | None]:
        """Copy kernel and ramdisk into the instance directory, as Nova does."""
        image = self.request.image
        copies: list[str | None] = []
        for what, source in (("kernel", image.kernel), ("ramdisk", image.ramdisk)):
            if not source:
                copies.append(None)
                continue
            target = os.path.join(self.claim.directory, what)
            # Checked and copied from one descriptor, never more readable
            # than the source (a 0600 kernel stays 0600), as images are.
            fetch.LocalFileFetcher().fetch(source, target)
            copies.append(target)
        return copies[0], copies[1]

    def _connect_volume(
        self, mapping: Mapping[str, Any], targets: TargetNames, default_bus: str
    ) -> tuple[GuestDisk, dict[str, Any]]:
        info = mapping.get("connection_info")
        if not isinstance(info, Mapping) or "driver_volume_type" not in info:
            raise exception.VolumeDriverError(
                driver="?",
                reason=f"instance {self.name}: a block device mapping has no "
                "connection_info['driver_volume_type']; give Cinder's connection_info "
                f"(got {mapping!r})",
            )
        bus = mapping.get("disk_bus") or default_bus
        mount = mapping.get("mount_device")
        target = targets.take(os.path.basename(mount)) if mount else targets.next(bus)
        volume_type = info["driver_volume_type"]
        driver = loader.volume_driver(volume_type)(self.driver.conf, probe=self.driver.probe)
        # The volume is connected to the host already (os-brick's job): a
        # failed spawn has nothing to undo for it and never deletes it.
        disk = driver.connect(info, target, bus)
        LOG.info("Instance %s: connected %s volume as %s", self.name, volume_type, target)
        entry = {"target": target, "bus": bus, "driver_volume_type": volume_type}
        return disk, {**entry, "connection_info": dict(info)}


def _log_tuning(name: str, tuning: GuestTuning) -> None:
    count = tuning.iothreads.count
    LOG.info("Instance %s: iothreads=%s (%s)", name, count.value, count.reason)
    for disk in tuning.disks:
        for setting, decision in disk.settings():
            if decision.value is None and setting in ("iothread_queues", "discard_no_unref"):
                continue
            value = "-" if decision.value is None else decision.value
            LOG.info(
                "Instance %s disk %s: %s=%s (%s)", name, disk.disk, setting, value, decision.reason
            )


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
