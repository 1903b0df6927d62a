"""Nova's functional tests of its libvirt driver (``nova.tests.functional.libvirt``)
and the regression tests built on them (``nova.tests.functional.regressions``)."""

import importlib.util

from tests.nova_suites import rebind


def _on_libvirt(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    with open(spec.origin, encoding="utf-8") as handle:
        return "nova.tests.functional.libvirt" in handle.read()


FUNCTIONAL = [
    *rebind.modules_in("nova.tests.functional.libvirt"),
    *filter(_on_libvirt, rebind.modules_in("nova.tests.functional.regressions")),
]


def load_tests(loader, standard_tests, pattern):
    return rebind.load(loader, FUNCTIONAL)
