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


class _Connection:
    """A libvirt connection's version calls, as each driver answers them."""

    def __init__(self, kind: str, lib: int, hypervisor: int) -> None:
        self.kind, self.lib, self.hypervisor = kind, lib, hypervisor

    def getType(self) -> str:
        return self.kind

    def getLibVersion(self) -> int:
        return self.lib

    def getVersion(self) -> int:
        return self.hypervisor


def _usable() -> IoUringSupport:
    return IoUringSupport(True, "")


@pytest.mark.parametrize(
    ("kind", "hypervisor", "qemu"),
    [("QEMU", 10_000_002, (10, 0, 2)), ("TEST", 2, None)],
)
def test_host_caps_counts_only_qemus_version_as_qemus(kind, hypervisor, qemu):
    """One reader for both paths: the drop-in called the test driver's 0.0.2 QEMU's."""
    caps = host_mod.host_caps(_Connection(kind, 11_003_000, hypervisor), _usable)
    assert caps.libvirt_version == (11, 3, 0) and caps.qemu_version == qemu
    assert caps.io_uring is (qemu is not None)
