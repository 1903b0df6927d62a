"""Host against libvirt's in-process test driver (test:///default)."""

from __future__ import annotations

import libvirt
import pytest

from nova_disk_tuning.storage.kernel import io_uring_support
from nova_disk_tuning.virt.libvirt.facts import version_from_int
from nova_disk_tuning.virt.libvirt.host import Host


@pytest.fixture
def host(make_conf):
    with Host(make_conf(libvirt={"connection_uri": "test:///default"})) as h:
        yield h


def test_versions_from_the_test_driver(host):
    assert host.hypervisor_type() == "TEST"
    # The library's own answer, asked without a connection.
    assert host.libvirt_version() == version_from_int(libvirt.getVersion())
    # The test driver's getVersion() is its own (0.0.2), not a QEMU version.
    assert host.get_connection().getVersion() == 2
    assert host.qemu_version() is None


def test_caps(host):
    caps = host.caps()
    assert caps.libvirt_version == version_from_int(libvirt.getVersion())
    assert caps.qemu_version is None
    assert caps.kernel_io_uring == io_uring_support().usable
    # QEMU unknown: nothing that needs a QEMU version is claimed.
    assert not caps.io_uring and not caps.iothread_queue_mapping
    assert "QEMU version unknown" in caps.io_uring_missing()
    assert caps.discard_no_unref == (caps.libvirt_version >= (9, 5, 0))
    assert host.caps() is caps


def test_connection_is_lazy_kept_and_reopened(make_conf):
    h = Host(make_conf(libvirt={"connection_uri": "test:///default"}))
    assert h._conn is None
    conn = h.get_connection()
    assert h.get_connection() is conn and conn.isAlive()
    h.close()
    assert h._conn is None
    assert h.get_connection().isAlive()
    h.close()


def test_read_only_connection(make_conf):
    with Host(make_conf(libvirt={"connection_uri": "test:///default"}), read_only=True) as h:
        assert h.get_connection().isAlive()
        assert h.libvirt_version() >= (1, 0, 0)


def test_domain_capabilities_unsupported_by_test_driver(host):
    assert host.domain_capabilities() is None
