"""The base of every volume driver: Cinder's connection_info -> a GuestDisk.

A volume driver describes an already connected volume (os-brick's
``connect_volume`` has run: block transports carry ``data.device_path``) as
a :class:`LibvirtConfigGuestDisk` (source, target, serial, access mode,
QoS: no cache or io) and *measures* its :class:`DiskFacts`. The one thing
a driver prefers, not measures, is its AIO mode: :meth:`aio_hint` is the
hook the Nova spec "Libvirt: AIO mode for disk devices" asks for. The hint
goes into ``DiskFacts.aio_hint`` and ``tuning.py`` decides; with
``[libvirt] use_default_aio_mode_for_volumes`` the policy ignores it.

Subclasses set :attr:`transport` (the ``driver_volume_type``) and
implement :meth:`_source` (config) and :meth:`_measure` (facts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.storage.probe import StorageProbe
from nova_disk_tuning.virt.libvirt.domxml import IOTUNE_ELEMENTS, LibvirtConfigGuestDisk
from nova_disk_tuning.virt.libvirt.guest import GuestDisk
from nova_disk_tuning.virt.libvirt.tuning.facts import DiskFacts

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
    # The AIO mode this transport prefers (what the default hook returns).
    preferred_aio: ClassVar[str | None] = None
    # DiskFacts.storage_kind: what the storage is, for the io_uring denylist.
    storage_kind: ClassVar[str | None] = None

    def __init__(self, conf: cfg.ConfigOpts, probe: StorageProbe | None = None) -> None:
        self.conf = conf
        self.probe = probe or StorageProbe()

    # The hook ---------------------------------------------------------------

    def aio_hint(self, connection_info: Mapping[str, Any]) -> str | None:
        """The AIO mode this volume prefers: ``native``, ``threads``, ``io_uring`` or None.

        None means no preference (in-QEMU network clients, where ``io`` has no
        effect). Override to decide per volume; the policy still checks the
        preference against the cache mode and the measured allocation.
        """
        return self.preferred_aio

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

    def _measure(self, volume: Attachment) -> tuple[dict[str, Any], list[str]]:
        """DiskFacts fields measured on the host, and notes on what was found."""
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
        data = self.data(connection_info)
        measured, notes = self._measure(Attachment(connection_info, config, data))
        hint = self.aio_hint(connection_info)
        notes.insert(0, f"{self.transport} prefers AIO {hint or 'unset (no preference)'}")
        if config.shareable:
            notes.append("multiattach: shareable, so the policy bypasses the host page cache")
        discard = requested_discard(data)
        fields: dict[str, Any] = {
            "format": config.driver_format or "raw",
            "storage_kind": self.storage_kind,
            **measured,
        }
        facts = DiskFacts(
            name=target_dev,
            source_type=config.source_type,
            shareable=bool(config.shareable),
            bus=bus,
            aio_hint=hint,
            driver=self.transport,
            is_volume=True,
            discard=discard,
            **fields,
        )
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


def requested_discard(data: Mapping[str, Any]) -> str | None:
    """The volume's own discard request: Cinder sets ``data.discard`` for thin storage."""
    return "unmap" if data.get("discard") is True else None
