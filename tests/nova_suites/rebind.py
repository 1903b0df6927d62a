"""Nova's own libvirt tests, on Nova's driver or on the drop-in (``NDT_NOVA_SUITE``).

Imported first by every module of this package. With ``NDT_NOVA_SUITE=dropin``
every ``LibvirtDriver`` Nova's tests make is ``disk_tuning.LibvirtDriver``
(``nova.virt.libvirt.driver.LibvirtDriver`` and ``nova.virt.libvirt.
LibvirtDriver`` are rebound to it), and Nova's image backends are the
project's (``Flat``, ``Qcow2``, ``Backend``). With ``nova`` (the baseline)
nothing is rebound. Both runs get the same test ids: Nova's own.

In the drop-in run, every warning or error the project logs is written to
``$NDT_NOVA_SUITE_EVENTS/<pid>.jsonl`` with the test that caused it, so
``compare`` can tell the expected fall-back (a disk Nova's test names does
not exist) from one that hides a bug.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import sys
import traceback

from nova import test as nova_test

from tests.nova import harness

SUITE = os.environ.get("NDT_NOVA_SUITE", "nova")
EVENTS = os.environ.get("NDT_NOVA_SUITE_EVENTS")
_CURRENT = {"test": None}
# oslotest's OS_TEST_TIMEOUT raises in the test's thread from SIGALRM, which a
# deadlocked worker may never run (seen once: test_numa_live_migration held a
# worker until CI's own time ran out). faulthandler's watchdog is a C thread:
# a minute later it prints every thread's stack to the log and ends the worker,
# so the run goes on and ``compare`` names the test that never finished.
# NDT_TEST_WATCHDOG (seconds) overrides it, for the test of the watchdog itself.


def _watchdog_seconds() -> int:
    """0 (no watchdog) without a per-test timeout, or one that is not a number of seconds."""
    own = os.environ.get("NDT_TEST_WATCHDOG", "")
    if own.isdigit():
        return int(own)
    timeout = os.environ.get("OS_TEST_TIMEOUT", "")
    return int(timeout) + 60 if timeout.isdigit() and int(timeout) > 0 else 0


WATCHDOG = _watchdog_seconds()


class _Events(logging.Handler):
    """Warnings and errors of the project's loggers, one JSON line each."""

    def __init__(self, directory: str) -> None:
        super().__init__(logging.WARNING)
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"{os.getpid()}.jsonl")

    def emit(self, record: logging.LogRecord) -> None:
        event = {
            "test": _CURRENT["test"],
            "logger": record.name,
            "level": record.levelname,
            "message": record.getMessage(),
            "exception": record.exc_info is not None and record.exc_info[0] is not None,
        }
        if event["exception"]:
            event["traceback"] = "".join(traceback.format_exception(*record.exc_info)[-4:])
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")


def _track_tests() -> None:
    """Remember which test runs (for the events) and give every test the API config."""
    from nova.tests.fixtures import conf as conf_fixture

    real = nova_test.TestCase.setUp

    def setUp(self, *args, **kwargs):
        _CURRENT["test"] = self.id()
        return real(self, *args, **kwargs)

    nova_test.TestCase.setUp = setUp
    real_run = nova_test.TestCase.run

    def run(self, *args, **kwargs):
        faulthandler.dump_traceback_later(WATCHDOG, exit=True, file=sys.stderr)
        try:
            return real_run(self, *args, **kwargs)
        finally:
            faulthandler.cancel_dump_traceback_later()

    if WATCHDOG > 0:
        nova_test.TestCase.run = run
    real_conf = conf_fixture.ConfFixture.setUp

    def conf_setUp(fixture):
        real_conf(fixture)
        # Nova's ConfFixture looks for api-paste.ini beside the nova package;
        # pip installs it under the environment's etc/nova. Not a
        # difference between the runs: both get it.
        fixture.conf.set_default("api_paste_config", harness.api_paste(), group="wsgi")

    conf_fixture.ConfFixture.setUp = conf_setUp


def _rebind() -> None:
    from nova.virt import libvirt as nova_libvirt
    from nova.virt.libvirt import driver as nova_driver
    from nova.virt.libvirt import imagebackend as nova_backend

    from nova_disk_tuning.nova import driver as dropin
    from nova_disk_tuning.nova import imagebackend as dropin_backend

    original = nova_driver.LibvirtDriver
    # fixtures.MonkeyPatch keeps a staticmethod static only when it finds it
    # in the patched class's own __dict__; Nova's tests patch
    # "nova.virt.libvirt.driver.LibvirtDriver.<name>", which now lands on the
    # drop-in class: give it Nova's descriptors, so they bind as on Nova's.
    for name, value in vars(original).items():
        if isinstance(value, staticmethod | classmethod) and name not in vars(dropin.LibvirtDriver):
            setattr(dropin.LibvirtDriver, name, value)
    saved = dict(vars(dropin.LibvirtDriver))
    real_run = nova_test.TestCase.run

    def run(self, *args, **kwargs):
        # The clean-up of those patches puts back what getattr() gave them (a
        # staticmethod unwrapped into a function): restore the class after
        # every test and all its clean-ups, before the next test.
        try:
            return real_run(self, *args, **kwargs)
        finally:
            _restore(dropin.LibvirtDriver, saved)

    nova_test.TestCase.run = run
    nova_driver.LibvirtDriver = dropin.LibvirtDriver
    nova_libvirt.LibvirtDriver = dropin.LibvirtDriver
    nova_backend.Flat = dropin_backend.Flat
    nova_backend.Qcow2 = dropin_backend.Qcow2
    nova_backend.Backend = dropin_backend.Backend


def _restore(cls: type, saved: dict) -> None:
    for name in set(vars(cls)) - set(saved):
        delattr(cls, name)
    for name, value in saved.items():
        if vars(cls).get(name) is not value:
            setattr(cls, name, value)


def modules_in(package: str) -> list[str]:
    """The test modules of a package of Nova's tests, sorted."""
    import importlib
    import pkgutil

    found = importlib.import_module(package)
    return sorted(
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(found.__path__)
        if info.name.startswith("test_")
    )


def load(loader, names: list[str]):
    """A suite of Nova's test modules ``names``, as Nova's ids name them."""
    import unittest

    suite = unittest.TestSuite()
    for name in names:
        suite.addTests(loader.loadTestsFromName(name))
    return suite


_track_tests()
if SUITE == "dropin":
    _rebind()
    if EVENTS:
        logging.getLogger("nova_disk_tuning").addHandler(_Events(EVENTS))
elif SUITE != "nova":
    raise SystemExit(f"NDT_NOVA_SUITE={SUITE!r}: use nova (the baseline) or dropin")
