"""Layers import in one direction: conf -> storage -> images -> virt -> cmd/bench."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "nova_disk_tuning"
# Each layer may import the layers before it (and exception.py, which all share).
ORDER = ["conf", "storage", "images", "virt", "bench", "cmd"]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "nova_disk_tuning" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ORDER else None


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


@pytest.mark.parametrize("layer", ORDER)
def test_layer_imports_only_earlier_layers(layer):
    allowed = set(ORDER[: ORDER.index(layer) + 1])
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module in _imports(path):
            target = _layer(module)
            if target is not None and target not in allowed:
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from nova_disk_tuning.virt.libvirt import tuning\n")
    assert _layer(next(m for m in _imports(bad) if "virt" in m)) == "virt"


LIBVIRT = "nova_disk_tuning.virt.libvirt"
# Inside virt/libvirt: packages that must not reach into others.
FORBIDDEN = {
    # The policy decides from facts; it knows no backend, volume driver or driver.
    "virt/libvirt/tuning": (
        f"{LIBVIRT}.imagebackend",
        f"{LIBVIRT}.volume",
        f"{LIBVIRT}.driver",
        f"{LIBVIRT}.spawn",
        f"{LIBVIRT}.guest",
        f"{LIBVIRT}.audit",
    ),
    # The XML objects render what they are given: no policy.
    "virt/libvirt/domxml": (f"{LIBVIRT}.tuning", f"{LIBVIRT}.imagebackend", f"{LIBVIRT}.driver"),
    # Backends and volume drivers report facts; they never decide.
    "virt/libvirt/imagebackend": (f"{LIBVIRT}.tuning.policy", f"{LIBVIRT}.driver"),
    "virt/libvirt/volume": (f"{LIBVIRT}.tuning.policy", f"{LIBVIRT}.driver"),
}


def _offenders(folder: str, forbidden: tuple[str, ...], root: pathlib.Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted((root / folder).rglob("*.py")):
        for module in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(root.parent)} imports {module}")
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_libvirt_packages_keep_to_their_job(folder):
    assert (PACKAGE / folder).is_dir(), folder
    assert not _offenders(folder, FORBIDDEN[folder])


def test_common_imports_nothing_of_the_project_but_exception():
    found = [
        f"{path.name} imports {module}"
        for path in sorted((PACKAGE / "common").rglob("*.py"))
        for module in _imports(path)
        if module.startswith("nova_disk_tuning")
        and not module.startswith(("nova_disk_tuning.common", "nova_disk_tuning.exception"))
        and module != "nova_disk_tuning"
    ]
    assert not found


def test_nothing_outside_cmd_imports_cmd():
    found = [
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "cmd"
        for module in _imports(path)
        if module.startswith("nova_disk_tuning.cmd")
    ]
    assert not found


def test_the_package_check_sees_a_violation(tmp_path):
    bad = tmp_path / "pkg" / "virt" / "libvirt" / "tuning"
    bad.mkdir(parents=True)
    (bad / "x.py").write_text(f"from {LIBVIRT}.imagebackend.file import Flat\n")
    folder = "virt/libvirt/tuning"
    assert _offenders(folder, FORBIDDEN[folder], root=tmp_path / "pkg")


def test_only_the_nova_integration_imports_nova():
    """Nova is imported in nova_disk_tuning/nova/ only, and nothing imports that package.

    The standalone CLI and driver run on hosts without Nova; the drop-in
    reaches the project through its layers, never the other way round.
    """
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        inside = path.is_relative_to(PACKAGE / "nova")
        for module in _imports(path):
            top = module.split(".")[0]
            if top == "nova" and not inside:
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
            if module.startswith("nova_disk_tuning.nova") and not inside:
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
            if inside and _layer(module) in ("bench", "cmd"):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_the_nova_shim_only_reexports_the_driver():
    shim = PACKAGE.parent / "nova" / "virt" / "disk_tuning" / "__init__.py"
    assert sorted(_imports(shim)) == [
        "nova_disk_tuning.nova.driver",
        "nova_disk_tuning.nova.driver.LibvirtDriver",
    ]
    # nova/ and nova/virt/ stay Nova's: no __init__.py of ours there.
    assert not (PACKAGE.parent / "nova" / "__init__.py").exists()
    assert not (PACKAGE.parent / "nova" / "virt" / "__init__.py").exists()
