"""The base of every volume driver: Cinder's connection_info -> a GuestDisk.

A volume driver describes an already connected volume (os-brick's
``connect_volume`` has run: block transports carry ``data.device_path``) as
a :class:`LibvirtConfigGuestDisk` (source, target, serial, access mode,
QoS: no cache or io) and has its :class:`DiskFacts` measured by
:mod:`nova_disk_tuning.policy.measure`, as every disk is. The one thing a
driver prefers, not measures, is its AIO mode: :meth:`aio_hint` is the hook
the Nova spec "Libvirt: AIO mode for disk devices" asks for; by default the
transport's entry in :mod:`nova_disk_tuning.policy.transports`. The hint
goes into ``DiskFacts.aio_hint`` and the policy decides; with ``[libvirt]
use_default_aio_mode_for_volumes`` it ignores the hint.

Subclasses set :attr:`transport` (the ``driver_volume_type``) and
implement :meth:`_source` (config), :meth:`_check_source` (the host file or
device is there and of the right kind) and :meth:`_notes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.domxml import IOTUNE_ELEMENTS, LibvirtConfigGuestDisk
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.policy import measure, transports
from nova_disk_tuning.policy.facts import DiskFacts
from nova_disk_tuning.storage.probe import StorageProbe

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Attachment:
    """A volume being described: Cinder's connection_info, its ``data``, the config being filled."""

    info: Mapping[str, Any]
    config: LibvirtConfigGuestDisk
    data: Mapping[str, Any]


# Cinder's front-end QoS keys are libvirt's <iotune> element names.
QOS_KEYS = frozenset(IOTUNE_ELEMENTS)
ACCESS_MODES = ("rw", "ro")


class LibvirtBaseVolumeDriver:
    """Turns one transport's ``connection_info`` into a :class:`GuestDisk`."""

    # connection_info['driver_volume_type'] this driver serves.
    transport: ClassVar[str] = ""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        probe: StorageProbe | None = None,
        qemu_img: QemuImg | None = None,
    ) -> None:
        self.conf = conf
        self.probe = probe or StorageProbe()
        # Only volumes that are not raw need qemu-img (their virtual size).
        self._qemu_img = qemu_img

    @property
    def qemu_img(self) -> QemuImg:
        if self._qemu_img is None:
            self._qemu_img = QemuImg(self.conf, probe=self.probe)
        return self._qemu_img

    # The hook ---------------------------------------------------------------

    def aio_hint(self, connection_info: Mapping[str, Any]) -> str | None:
        """The AIO mode this volume prefers: ``native``, ``threads``, ``io_uring`` or None.

        None means no preference (in-QEMU network clients, where ``io`` has no
        effect). The default is the transport's entry in
        :data:`~nova_disk_tuning.policy.transports.TRANSPORTS`, which the Nova
        drop-in reads too. Override to decide per volume; the policy still
        checks the preference against the cache mode and the measured
        allocation.
        """
        return transports.aio_hint(self.transport)

    # Public API ---------------------------------------------------------------

    def connect(
        self,
        connection_info: Mapping[str, Any],
        target_dev: str,
        bus: str = "virtio",
        device: str = "disk",
    ) -> GuestDisk:
        """Describe and measure a connected volume for the guest target ``target_dev``.

        ``device`` is libvirt's disk device (``disk``, ``lun``, ``cdrom``).
        Nothing is created, so ``GuestDisk.created`` is empty: a failed spawn
        must never delete a volume.
        """
        config = self.get_config(connection_info, target_dev, bus, device)
        facts, notes = self._facts_and_notes(connection_info, target_dev, bus, config)
        LOG.info(
            "Volume %s (%s) as %s: %s",
            self.volume_id(connection_info),
            self.transport,
            target_dev,
            "; ".join(notes),
        )
        return GuestDisk(config=config, facts=facts, notes=tuple(notes))

    def get_config(
        self,
        connection_info: Mapping[str, Any],
        target_dev: str,
        bus: str = "virtio",
        device: str = "disk",
    ) -> LibvirtConfigGuestDisk:
        """The disk's config without tuning (no cache, io, discard)."""
        data = self.data(connection_info)
        volume = self.volume_id(connection_info)
        try:
            config = LibvirtConfigGuestDisk(
                source_device=device,
                driver_name="qemu",
                target_dev=target_dev,
                target_bus=bus,
            )
            self._source(Attachment(connection_info, config, data))
            config.serial = connection_info.get("serial")
            config.readonly = self._access_mode(connection_info, data) == "ro"
            config.shareable = self.multiattach(connection_info)
            for key in ("logical_block_size", "physical_block_size"):
                if data.get(key) is not None:
                    setattr(config, key, self._int(connection_info, f"data.{key}", data[key]))
            self._apply_qos(config, connection_info, data)
            config.validate()
        except (exception.InvalidConfigValue, exception.InvalidDiskConfig) as exc:
            raise self.invalid(
                connection_info, f"{exc}; fix the volume's connection_info"
            ) from None
        LOG.debug("Volume %s: config %r", volume, config)
        return config

    # connection_info helpers --------------------------------------------------

    def data(self, connection_info: Mapping[str, Any]) -> Mapping[str, Any]:
        """``connection_info['data']``, after checking the envelope."""
        if not isinstance(connection_info, Mapping):
            raise self.invalid({}, f"expected a dict, got {type(connection_info).__name__}")
        kind = connection_info.get("driver_volume_type")
        if kind is not None and kind != self.transport:
            raise self.invalid(
                connection_info,
                f"driver_volume_type is {kind!r} but this is the {self.transport!r} driver; "
                "load the driver named by driver_volume_type (loader.volume_driver)",
            )
        data = connection_info.get("data")
        if not isinstance(data, Mapping):
            raise self.invalid(
                connection_info,
                f"'data' is {'missing' if data is None else type(data).__name__}; "
                "Cinder's initialize_connection returns a dict there",
            )
        return data

    def require(
        self,
        connection_info: Mapping[str, Any],
        key: str,
        hint: str = "check the Cinder backend's initialize_connection output",
    ) -> Any:
        """``data[key]``, or an error naming the key, the driver and what to do."""
        value = self.data(connection_info).get(key)
        if value in (None, ""):
            raise self.invalid(
                connection_info,
                f"data.{key} is missing; the {self.transport} transport needs it ({hint})",
            )
        return value

    @staticmethod
    def volume_id(connection_info: Mapping[str, Any]) -> str:
        serial = connection_info.get("serial") if isinstance(connection_info, Mapping) else None
        if serial:
            return str(serial)
        data = connection_info.get("data") if isinstance(connection_info, Mapping) else None
        found = data.get("volume_id") if isinstance(data, Mapping) else None
        return str(found) if found else "<no serial>"

    def invalid(
        self, connection_info: Mapping[str, Any], reason: str
    ) -> exception.InvalidConnectionInfo:
        return exception.InvalidConnectionInfo(
            driver=self.transport, volume=self.volume_id(connection_info), reason=reason
        )

    def error(self, connection_info: Mapping[str, Any], reason: str) -> exception.VolumeDriverError:
        volume = self.volume_id(connection_info)
        return exception.VolumeDriverError(
            driver=self.transport, reason=f"volume {volume}: {reason}"
        )

    @staticmethod
    def multiattach(connection_info: Mapping[str, Any]) -> bool:
        # Nova puts the volume's multiattach flag at the top level; some
        # backends repeat it in data.
        data = connection_info.get("data") or {}
        return bool(connection_info.get("multiattach") or data.get("multiattach"))

    # Subclass interface ---------------------------------------------------------

    def _source(self, volume: Attachment) -> None:
        """Set source_type, the source and driver_format on ``volume.config``."""
        raise NotImplementedError

    def _check_source(self, volume: Attachment, path: str) -> None:
        """Refuse, in the transport's words, a host path that is missing or of the wrong kind."""
        raise NotImplementedError

    def _notes(self, volume: Attachment, facts: DiskFacts) -> list[str]:
        """What was found, for the logs and ``explain``."""
        raise NotImplementedError

    def _source_path(self, volume: Attachment) -> str:
        """The host file or device :meth:`_source` set, for :meth:`_measure` to measure."""
        path = volume.config.source_path
        if path is None:
            raise self.error(
                volume.info,
                f"the {self.transport} driver's _source set no source_path to measure; "
                "a file or block volume driver must set config.source_path",
            )
        return path

    # Internals ------------------------------------------------------------------

    def _facts_and_notes(
        self,
        connection_info: Mapping[str, Any],
        target_dev: str,
        bus: str,
        config: LibvirtConfigGuestDisk,
    ) -> tuple[DiskFacts, list[str]]:
        volume = Attachment(connection_info, config, self.data(connection_info))
        shareable = bool(config.shareable)
        fmt = config.driver_format or "raw"
        if config.source_type == "network":
            facts = measure.measure_network(
                target_dev, format=fmt, bus=bus, shareable=shareable, driver=self.transport
            )
        else:
            path = self._source_path(volume)
            self._check_source(volume, path)
            try:
                facts = measure.measure_local(
                    path,
                    name=target_dev,
                    probe=self.probe,
                    qemu_img=self.qemu_img,
                    format=fmt,
                    source_type=config.source_type,
                    bus=bus,
                    shareable=shareable,
                    driver=self.transport,
                )
            except exception.ImageError as exc:
                # A qcow2 volume's virtual size is qemu-img's to read.
                raise self.error(connection_info, f"cannot measure {path}: {exc}") from None
        hint = self.aio_hint(connection_info)
        facts = measure.as_volume(facts, connection_info, hint)
        notes = [f"{self.transport} prefers AIO {hint or 'unset (no preference)'}"]
        notes += self._notes(volume, facts)
        if config.shareable:
            notes.append("multiattach: shareable, so the policy bypasses the host page cache")
        return facts, notes

    def _access_mode(self, connection_info: Mapping[str, Any], data: Mapping[str, Any]) -> str:
        mode = data.get("access_mode") or "rw"
        if mode not in ACCESS_MODES:
            raise self.invalid(
                connection_info,
                f"data.access_mode is {mode!r}; Cinder sends 'rw' or 'ro'",
            )
        return mode

    def _apply_qos(
        self,
        config: LibvirtConfigGuestDisk,
        connection_info: Mapping[str, Any],
        data: Mapping[str, Any],
    ) -> None:
        # Cinder puts front-end QoS in data.qos_specs; accept the top level too.
        specs = data.get("qos_specs") or connection_info.get("qos_specs")
        if not specs:
            return
        volume = self.volume_id(connection_info)
        if not isinstance(specs, Mapping):
            LOG.warning("Volume %s: ignoring qos_specs %r: not a dict of limits", volume, specs)
            return
        for key, raw in sorted(specs.items()):
            if key not in QOS_KEYS:
                LOG.warning(
                    "Volume %s: ignoring unknown qos_specs key %r (libvirt <iotune> knows %s)",
                    volume,
                    key,
                    ", ".join(sorted(QOS_KEYS)),
                )
                continue
            value = self._int(connection_info, f"qos_specs {key}", raw)
            if value == 0:
                # 0 is "no limit" for Cinder and for QEMU; libvirt's schema
                # wants a positive number, so leave the element out.
                continue
            setattr(config, f"disk_{key}", value)

    def _int(self, connection_info: Mapping[str, Any], where: str, raw: Any) -> int:
        try:
            return _as_int(raw)
        except ValueError:
            raise self.invalid(connection_info, f"{where}={raw!r} is not a whole number") from None


def _as_int(value: Any) -> int:
    """An int from an int or a decimal string (Cinder sends both)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdecimal():
        return int(value.strip())
    raise ValueError(f"{value!r} is not a whole number")
