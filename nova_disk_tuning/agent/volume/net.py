"""Volumes QEMU reaches with its own network client: ``<disk type='network'>``.

Nothing is attached on the host, so there is nothing to measure: no path,
no allocation, no O_DIRECT. ``io`` has no effect on in-QEMU clients (the
Nova spec, after danpb), so these drivers express no AIO preference.
"""

from __future__ import annotations

from oslo_log import log as logging

from nova_disk_tuning.agent.volume.base import Attachment, LibvirtBaseVolumeDriver
from nova_disk_tuning.policy.facts import DiskFacts

LOG = logging.getLogger(__name__)


class LibvirtNetVolumeDriver(LibvirtBaseVolumeDriver):
    """A network disk whose libvirt protocol is the transport's name."""

    @property
    def protocol(self) -> str:
        return self.transport

    def _source(self, volume: Attachment) -> None:
        volume.config.source_type = "network"
        volume.config.source_protocol = self.protocol
        volume.config.source_name = self.require(volume.info, "name")
        hosts = volume.data.get("hosts") or []
        ports = volume.data.get("ports") or []
        if not isinstance(hosts, list) or not isinstance(ports, list):
            raise self.invalid(volume.info, "data.hosts and data.ports must be lists")
        if ports and len(ports) != len(hosts):
            raise self.invalid(
                volume.info,
                f"data.hosts has {len(hosts)} entries but data.ports has {len(ports)}; "
                "give one port per host",
            )
        volume.config.source_hosts = hosts
        volume.config.source_ports = ports
        volume.config.driver_format = volume.data.get("format") or "raw"
        self._auth(volume)

    def _auth(self, volume: Attachment) -> None:
        if not volume.data.get("auth_enabled"):
            return
        volume.config.auth_username = self.require(volume.info, "auth_username")
        volume.config.auth_secret_type = self.require(volume.info, "secret_type")
        volume.config.auth_secret_uuid = self.require(volume.info, "secret_uuid")

    def _notes(self, volume: Attachment, facts: DiskFacts) -> list[str]:
        hosts = ", ".join(volume.config.source_hosts) or "hosts from the client's configuration"
        return [f"{self.protocol} {volume.config.source_name} via QEMU's client ({hosts})"]


class RBDVolumeDriver(LibvirtNetVolumeDriver):
    """Ceph RBD through QEMU's librbd client."""

    transport = "rbd"

    def _auth(self, volume: Attachment) -> None:
        # Cinder's credentials win: its Ceph cluster may not be the one the
        # image backend's [libvirt] rbd_user / rbd_secret_uuid point at.
        libvirt = self.conf.libvirt
        if volume.data.get("auth_enabled"):
            volume.config.auth_username = self.require(volume.info, "auth_username")
            volume.config.auth_secret_type = volume.data.get("secret_type") or "ceph"
            uuid = volume.data.get("secret_uuid") or libvirt.rbd_secret_uuid
            if not uuid:
                raise self.invalid(
                    volume.info,
                    "data.auth_enabled is true but data.secret_uuid is missing and "
                    "[libvirt] rbd_secret_uuid is not set; set one of them to the libvirt "
                    "secret holding the Ceph key",
                )
            if not volume.data.get("secret_uuid"):
                LOG.info(
                    "Volume %s: data.secret_uuid missing, using [libvirt] rbd_secret_uuid",
                    self.volume_id(volume.info),
                )
            volume.config.auth_secret_uuid = uuid
        elif libvirt.rbd_secret_uuid and libvirt.rbd_user:
            # Nova's fallback for backends that do not send credentials.
            LOG.info(
                "Volume %s: Cinder sent no Ceph credentials; using [libvirt] rbd_user "
                "and rbd_secret_uuid",
                self.volume_id(volume.info),
            )
            volume.config.auth_username = libvirt.rbd_user
            volume.config.auth_secret_type = volume.data.get("secret_type") or "ceph"
            volume.config.auth_secret_uuid = libvirt.rbd_secret_uuid
