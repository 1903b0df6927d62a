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
