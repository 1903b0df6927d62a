"""``disk_tuning.LibvirtDriver``: Nova's libvirt driver, with the project's disks.

A subclass of ``nova.virt.libvirt.driver.LibvirtDriver`` that overrides
seven seams and nothing else:

* ``_get_guest_config``: where every guest XML Nova builds comes from (spawn,
  hard reboot, rescue, resize; a live migration carries the running XML
  over). The config Nova built is measured and tuned by the policy before
  Nova renders it.
* ``attach_volume`` / ``_get_volume_config``: a volume attached to a running
  guest gets the same per-disk decisions, and an IOThread of that guest.
* ``_live_migration_operation``: where Nova rewrites each volume's XML for
  the destination; a volume keeps the ``<driver>`` it runs with (tuning and
  IOThread) instead of taking Nova's.
* ``image_backend``: the project's preallocation, qcow2 overlays and image
  conversion in place of Nova's (:mod:`.imagebackend`);
* ``_cleanup_lvm``: ``volume_clear = zero`` through the fast-zero chain;
* ``manage_image_cache``: after Nova's image cache manager removed unused
  bases, the records the project keeps beside them go too;
* ``migrate_disk_and_power_off``: a resize or cold migration on this host
  copies each disk's data, not its preallocation (:mod:`.resize`).

Everything else (scheduling, networking, migration, the whole life cycle) is
Nova's, unchanged.
"""

from __future__ import annotations

import collections
import contextvars
import os
from collections.abc import Mapping
from typing import Any

from lxml import etree
from nova import exception as nova_exception
from nova.conf import CONF
from nova.privsep import fs as nova_privsep_fs
from nova.virt.libvirt import driver as nova_driver
from oslo_concurrency import processutils
from oslo_log import log as logging

from nova_disk_tuning.domxml.disk import LibvirtConfigGuestDisk
from nova_disk_tuning.host import host_caps
from nova_disk_tuning.images.cache import ImageCache
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.nova import conf as nova_conf
from nova_disk_tuning.nova import disks as nova_disks
from nova_disk_tuning.nova import imagebackend, privsep, render, resize
from nova_disk_tuning.nova.tune import describe, tune_config
from nova_disk_tuning.policy.decide import decide
from nova_disk_tuning.policy.facts import HostCaps
from nova_disk_tuning.storage.probe import StorageProbe

LOG = logging.getLogger(__name__)

# The guest this thread is live-migrating (set by _live_migration_operation,
# read by _get_volume_config while Nova rewrites the XML for the destination).
_MIGRATING: contextvars.ContextVar[Any] = contextvars.ContextVar("ndt_migrating", default=None)
resize.install()


class LibvirtDriver(nova_driver.LibvirtDriver):
    def __init__(self, virtapi: Any, read_only: bool = False) -> None:
        nova_conf.registered(CONF)
        super().__init__(virtapi, read_only)
        self.image_backend = imagebackend.Backend(CONF.use_cow_images)
        self._ndt_qemu_img = QemuImg(CONF)
        self._ndt_caps: HostCaps | None = None
        # connection_info id -> IOThread for a volume being attached (see attach_volume).
        self._ndt_attach_threads: dict[int, int | None] = {}

    # -- facts about this host ---------------------------------------------------

    def _ndt_host_caps(self) -> HostCaps:
        if self._ndt_caps is None:
            try:
                self._ndt_caps = host_caps(self._host.get_connection())
            except Exception as exc:  # the connection could not say; asked again next time
                LOG.warning(
                    "libvirt and QEMU versions unknown (%s): version-gated settings are off "
                    "for this guest",
                    exc,
                )
                return host_caps(None)
        return self._ndt_caps

    # -- guest configs -------------------------------------------------------------

    def _get_guest_config(
        self,
        instance: Any,
        network_info: Any,
        image_meta: Any,
        disk_info: Any,
        rescue: Any = None,
        block_device_info: Any = None,
        context: Any = None,
        mdevs: Any = None,
        accel_info: Any = None,
        share_info: Any = None,
        old_guest: Any = None,
    ) -> Any:
        guest = super()._get_guest_config(
            instance,
            network_info,
            image_meta,
            disk_info,
            rescue=rescue,
            block_device_info=block_device_info,
            context=context,
            mdevs=mdevs,
            accel_info=accel_info,
            share_info=share_info,
            old_guest=old_guest,
        )
        disks = [d for d in guest.devices if d.root_name == "disk"]
        try:
            measured, skipped = nova_disks.measure(
                disks,
                nova_disks.volumes_by_target(block_device_info),
                # A fresh probe per guest: device numbers are reused after a
                # volume detach, so remembered verdicts could describe
                # another device.
                StorageProbe(),
                self._ndt_qemu_img,
            )
            tune_config(
                guest,
                measured,
                skipped,
                self._ndt_host_caps(),
                CONF,
                _extra_specs(instance),
                instance=instance,
            )
        except Exception:
            # A bug or an unforeseen host state in the tuning must not fail a
            # boot Nova alone would complete: Nova's config goes out as built.
            LOG.exception(
                "Disk tuning failed; the guest keeps Nova's disk settings", instance=instance
            )
        return guest

    # -- resize and cold migration ------------------------------------------------------

    def migrate_disk_and_power_off(
        self,
        context: Any,
        instance: Any,
        dest: Any,
        flavor: Any,
        network_info: Any,
        block_device_info: Any = None,
        timeout: int = 0,
        retry_interval: int = 0,
    ) -> Any:
        # Nova's own signature (its test_public_api_signatures holds every
        # driver to the base class's).
        with resize.sparse_copies():
            return super().migrate_disk_and_power_off(
                context,
                instance,
                dest,
                flavor,
                network_info,
                block_device_info=block_device_info,
                timeout=timeout,
                retry_interval=retry_interval,
            )

    # -- the image cache ---------------------------------------------------------------

    def manage_image_cache(self, context: Any, all_instances: Any) -> None:
        """Nova's image cache manager, then the project's records of the bases it removed.

        Nova's manager ages and removes the unused ``_base/<sha1>`` files; the
        ``<sha1>.info`` the project's cache writes beside each would stay, one
        per image ever cached on the host.
        """
        super().manage_image_cache(context, all_instances)
        try:
            ImageCache(CONF).remove_orphan_records()
        except Exception:  # the periodic task must go on; the next run tries again
            LOG.exception("Could not remove the records of removed base images")

    # -- LVM disks of a deleted instance ----------------------------------------------

    def _cleanup_lvm(self, instance: Any, block_device_info: Any) -> None:
        """``volume_clear = zero`` with the fast-zero chain instead of ``shred -n0 -z``.

        ``shred`` writes every byte; BLKZEROOUT / WRITE ZEROES let the device
        zero in place. Other modes, and encrypted disks (which Nova removes
        through dm-crypt first), stay Nova's.
        """
        if CONF.libvirt.volume_clear != "zero" or instance.get("ephemeral_key_uuid"):
            super()._cleanup_lvm(instance, block_device_info)
            return
        errors = []
        for path in self._lvm_disks(instance):
            try:
                # The wipe's own open is the check that the device is there.
                done = privsep.zero_volume(path, CONF.libvirt.volume_clear_size)
            except Exception:
                if os.path.exists(path):
                    raise
                # Listed but without a device node (an inactive volume): as
                # Nova's clear_volume, nothing to wipe, and still removed.
                LOG.warning("Ignoring missing logical volume %s", path, instance=instance)
            else:
                LOG.info(
                    "Wiped %d bytes of %s with %s in %.2f s",
                    done["bytes"],
                    path,
                    done["method"],
                    done["seconds"],
                    instance=instance,
                )
            try:
                nova_privsep_fs.lvremove(path)
            except processutils.ProcessExecutionError as exc:
                errors.append(str(exc))
        if errors:
            raise nova_exception.VolumesNotRemoved(reason=", ".join(errors))

    # -- volumes attached to a running guest -----------------------------------------

    def attach_volume(
        self,
        context: Any,
        connection_info: Any,
        instance: Any,
        mountpoint: Any,
        disk_bus: Any = None,
        device_type: Any = None,
        encryption: Any = None,
    ) -> None:
        self._ndt_attach_threads[id(connection_info)] = self._ndt_next_iothread(instance)
        try:
            super().attach_volume(
                context,
                connection_info,
                instance,
                mountpoint,
                disk_bus=disk_bus,
                device_type=device_type,
                encryption=encryption,
            )
        finally:
            self._ndt_attach_threads.pop(id(connection_info), None)

    def _get_volume_config(self, connection_info: Any, disk_info: Any) -> Any:
        conf = super()._get_volume_config(connection_info, disk_info)
        if id(connection_info) not in self._ndt_attach_threads:
            migrating = _MIGRATING.get()
            if migrating is not None:
                return self._ndt_keep_driver(conf, migrating)
            # A guest config: tuned as a whole by _get_guest_config.
            return conf
        conf = render.adopt(conf)
        thread = self._ndt_attach_threads[id(connection_info)]
        try:
            measured, skipped = nova_disks.measure(
                [conf],
                {conf.target_dev: connection_info},
                StorageProbe(),
                self._ndt_qemu_img,
            )
            for item in skipped:
                LOG.warning("Volume %s keeps Nova's settings: %s", item.target, item.reason)
            for facts in measured:
                tuning = decide(facts, self._ndt_host_caps(), CONF)
                tuning.apply(conf)
                if thread is not None and conf.target_bus == "virtio":
                    conf.driver_iothread = thread
                LOG.info("Volume %s: %s; iothread=%s", conf.target_dev, describe(tuning), thread)
        except Exception:
            LOG.exception("Disk tuning failed; the volume keeps Nova's settings")
        return conf

    # -- live migration ----------------------------------------------------------------

    def _live_migration_operation(
        self,
        context: Any,
        instance: Any,
        dest: Any,
        block_migration: Any,
        migrate_data: Any,
        guest: Any,
        device_names: Any,
    ) -> Any:
        token = _MIGRATING.set(guest)
        real_migrate = guest.migrate

        def migrate(*args: Any, **kwargs: Any) -> Any:
            # Nova re-pins IOThread 1 to the destination's emulator CPUs; the
            # drop-in's IOThreads 2..N must move with it (one pin rule).
            xml = kwargs.get("destination_xml")
            if xml and "dst_numa_info" in migrate_data:
                kwargs["destination_xml"] = render.repin_iothreads(xml)
            return real_migrate(*args, **kwargs)

        guest.migrate = migrate
        try:
            return super()._live_migration_operation(
                context, instance, dest, block_migration, migrate_data, guest, device_names
            )
        finally:
            guest.migrate = real_migrate
            _MIGRATING.reset(token)

    def _ndt_keep_driver(self, conf: Any, guest: Any) -> Any:
        """Nova's volume config for the destination, with the ``<driver>`` values it runs with.

        Nova replaces each volume's ``<driver>`` with the one it builds from
        the destination's connection_info, dropping the tuning and the
        IOThread binding. The connection_info is the destination's (its
        device path means nothing here, so the volume cannot be measured
        again); it is the same volume on the same storage, so the values
        decided when it was attached or the guest was built still hold.
        Local disks travel the same way in the running XML. A carried
        ``io='io_uring'`` finds a QEMU that has it: Nova's conductor refuses a
        destination whose hypervisor version is older than the source's
        (unless ``[workarounds] skip_hypervisor_version_check_on_lm``); a
        destination kernel with io_uring switched off is not detected.
        """
        try:
            root = etree.fromstring(guest.get_xml_desc(dump_migratable=True).encode())
            for element in root.iterfind("devices/disk"):
                if conf.serial is None or element.findtext("serial") != conf.serial:
                    continue
                running = LibvirtConfigGuestDisk()
                running.parse_dom(element)
                conf = render.carry_driver(conf, running)
                LOG.info(
                    "Volume %s keeps its <driver> on the destination: %s",
                    conf.serial,
                    render.driver_summary(conf),
                )
                break
        except Exception:
            LOG.exception("Disk tuning failed; the volume takes Nova's settings on the destination")
        return conf

    def _ndt_next_iothread(self, instance: Any) -> int | None:
        """The least used IOThread of the running guest, None if it has none."""
        try:
            xml = self._host.get_guest(instance).get_xml_desc()
            root = etree.fromstring(xml.encode())
        except Exception as exc:  # the guest may be gone; Nova reports that
            LOG.debug("No IOThread for the new volume: %s", exc)
            return None
        count = int(root.findtext("iothreads") or 0)
        if count < 1:
            return None
        use = collections.Counter(
            int(d.get("iothread", "0")) for d in root.iterfind("devices/disk/driver[@iothread]")
        )
        return min(range(1, count + 1), key=lambda t: (use[t], t))


def _extra_specs(instance: Any) -> Mapping[str, str]:
    flavor = getattr(instance, "flavor", None)
    specs = getattr(flavor, "extra_specs", None) if flavor is not None else None
    return dict(specs or {})
