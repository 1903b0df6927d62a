"""Host: URI, connection errors and capability assembly (no daemon needed)."""

from __future__ import annotations

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning import host as host_mod
from nova_disk_tuning.storage.kernel import IoUringSupport


def test_empty_uri_means_qemu_system(conf):
    assert host_mod.Host(conf).uri == "qemu:///system"


def test_configured_uri(make_conf):
    conf = make_conf(libvirt={"connection_uri": "test:///default"})
    assert host_mod.Host(conf).uri == "test:///default"


def test_connection_failure_says_uri_cause_and_remedy(make_conf, tmp_path):
    uri = f"qemu+unix:///system?socket={tmp_path}/no-such-socket"
    conf = make_conf(libvirt={"connection_uri": uri})
    with pytest.raises(exception.HypervisorError) as info:
        host_mod.Host(conf).caps()
    message = str(info.value)
    assert uri in message
    assert "no-such-socket" in message  # libvirt's own message
    assert "libvirtd" in message and "connection_uri" in message


def test_caps_take_the_kernel_probe(make_conf):
    conf = make_conf(libvirt={"connection_uri": "test:///default"})
    calls = []

    def probe() -> IoUringSupport:
        calls.append(1)
        return IoUringSupport(False, "disabled by /proc/sys/kernel/io_uring_disabled=2 (EPERM)")

    host = host_mod.Host(conf, io_uring_probe=probe)
    caps = host.caps()
    assert not caps.kernel_io_uring and not caps.io_uring
    assert "io_uring_disabled=2" in caps.io_uring_missing()
    assert host.caps() is caps and calls == [1]
