"""Fixtures for the end-to-end suite: a private libvirtd (QEMU, TCG) and a tiny guest.

Session fixtures:

``guest_kit`` -> :class:`nova_disk_tuning_bench.guest.kit.GuestKit`
    kernel + initramfs (the guest contract: ``nova_disk_tuning_bench.guest.console``).
``libvirtd`` -> :class:`nova_disk_tuning_bench.guest.daemon.PrivateLibvirtd`
    ``.uri`` for ``[libvirt] connection_uri``, ``.open()`` for a connection,
    ``.qemu_log(name)``, ``.qemu_pidfile(name)``, ``.diagnostics()``.

Function fixtures:

``libvirt_conn``  a connection to the private daemon, closed afterwards.
``domain_name``   a unique domain name for the test.
``run_guest``     ``run_guest(xml, console_log, timeout=180, on_start=None) -> GuestRun``:
                  start a domain paused, capture QEMU's argv, call
                  ``on_start(domain, argv)`` while paused, resume, wait for the guest to
                  power off (GuestLost if QEMU ends otherwise), undefine it, parse its
                  console.

The suite needs root. Anything else it needs that is missing is an error, not a skip.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nova_disk_tuning_bench.guest import console, domains, kit, lifecycle, stacks
from nova_disk_tuning_bench.guest.daemon import PrivateLibvirtd, private_libvirtd
from nova_disk_tuning_bench.guest.errors import GuestKitError, LibvirtdError

E2E_DIR = Path(__file__).parent
NOT_ROOT = "e2e tests need root: a private libvirtd runs QEMU as root on loop/file disks"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.root)


@pytest.fixture(scope="session")
def guest_kit() -> kit.GuestKit:
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    try:
        return kit.build_guest_kit()
    except GuestKitError as exc:
        pytest.fail(f"cannot build the e2e guest kit: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    try:
        import libvirt  # noqa: F401  (the daemon quiets its error printing when it starts)
    except ImportError:
        pytest.fail(
            "libvirt-python is not installed in this environment (requirements.txt; "
            "it builds against libvirt-dev)",
            pytrace=False,
        )
    try:
        with private_libvirtd() as daemon:
            _check_stack(daemon)
            yield daemon
    except LibvirtdError as exc:
        pytest.fail(f"cannot start the private libvirtd: {exc}", pytrace=False)


STACK_VERSIONS: dict[str, str] = {}


def _check_stack(daemon: PrivateLibvirtd) -> None:
    """The daemon runs the stack this leg names (NDT_STACK), or the leg fails."""
    STACK_VERSIONS.update(daemon.versions())
    marker = stacks.current().installed() or {}
    for key in ("libvirt", "qemu"):
        expected = marker.get(key)
        if expected is not None and STACK_VERSIONS[key] != expected:
            pytest.fail(
                f"stack {marker['name']}: the private daemon reports {key} "
                f"{STACK_VERSIONS[key]}, the stack has {expected}",
                pytrace=False,
            )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if STACK_VERSIONS:
        terminalreporter.write_line(
            "e2e on stack {stack}: libvirt {libvirt}, QEMU {qemu}".format(**STACK_VERSIONS)
        )


@pytest.fixture
def libvirt_conn(libvirtd: PrivateLibvirtd) -> Iterator[Any]:
    conn = libvirtd.open()
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def domain_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:40]
    return f"ndt-{base}-{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass
class GuestRun:
    """The outcome of :func:`run_guest`."""

    name: str
    argv: list[str]
    console: str
    report: console.GuestReport
    boot_seconds: float


@pytest.fixture
def run_guest(libvirtd: PrivateLibvirtd, libvirt_conn: Any) -> Callable[..., GuestRun]:
    import time

    def run(
        xml: str,
        console_log: Path,
        timeout: float = 180.0,
        on_start: Callable[[Any, list[str]], None] | None = None,
    ) -> GuestRun:
        t0 = time.monotonic()
        # Start paused: QEMU's argv can be read before the guest can finish and exit.
        dom = lifecycle.start_paused(libvirt_conn, xml)
        name = dom.name()
        try:
            argv = domains.qemu_cmdline(dom)
            if on_start is not None:
                on_start(dom, argv)
            dom.resume()
            lifecycle.wait_for_shutoff(
                dom, timeout=timeout, console_log=console_log, qemu_log=libvirtd.qemu_log(name)
            )
        finally:
            lifecycle.discard(dom)  # its name is free for the next run of the test
        elapsed = time.monotonic() - t0
        text = console_log.read_text(errors="replace") if console_log.exists() else ""
        return GuestRun(name, argv, text, console.parse_console(text), elapsed)

    return run
