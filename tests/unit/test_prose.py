"""The prose names what exists: every source file and module the docs and comments name.

README.rst, the Sphinx sources, the benchmarks' README and the package's own
docstrings and comments name files (``policy/decide.py``) and modules
(``nova_disk_tuning.policy.measure``). A move or a rename that leaves one of
them behind fails here, so the text cannot drift from the tree.
"""

from __future__ import annotations

import ast
import configparser
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Files of other projects that the prose names on purpose.
ELSEWHERE = {
    "nova/virt/libvirt/driver.py",
    "nova/virt/libvirt/imagebackend.py",
    "nova/virt/libvirt/config.py",
    "nova/virt/images.py",
    "nova/virt/driver.py",
    "nova/privsep/fs.py",
    "nova/virt/libvirt/storage/lvm.py",
    "storage/lvm.py",
    "setup.py",
}
PY_FILE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.py)\b")
MODULE = re.compile(r"\bnova_disk_tuning(?:_bench)?(?:\.[a-zA-Z_]\w*)+")


def _tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def _prose_files() -> list[str]:
    return [
        f
        for f in _tracked()
        if (f.endswith(".rst") and not f.startswith("releasenotes/"))
        or (f.endswith(".py") and f.startswith(("nova_disk_tuning/", "bench/", "nova/")))
        or f in ("Makefile", "tox.ini", "setup.cfg", "bench/setup.cfg")
    ]


def _module_file(parts: list[str]) -> pathlib.Path | None:
    base = ROOT / "bench" if parts[0] == "nova_disk_tuning_bench" else ROOT
    path = base.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(module: pathlib.Path, name: str) -> bool:
    """Whether ``module`` defines or imports ``name`` at its top level (read, not imported)."""
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
    return name in names


def _resolves(dotted: str) -> bool:
    """Whether the module (or a module's top-level name) exists; nothing is imported.

    Reading instead of importing keeps the unit tests free of Nova, which
    ``nova_disk_tuning.nova`` imports.
    """
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = _module_file(parts[:cut])
        if module is None:
            continue
        rest = parts[cut:]
        return not rest or _defines(module, rest[0])
    return False


def test_every_source_file_named_exists():
    tracked = _tracked()
    missing = []
    for name in _prose_files():
        for match in PY_FILE.finditer((ROOT / name).read_text()):
            path = match.group(1)
            if path in ELSEWHERE or any(t == path or t.endswith("/" + path) for t in tracked):
                continue
            missing.append(f"{name}: {path}")
    assert not missing, "\n".join(missing)


def _entry_point_groups() -> set[str]:
    groups = set()
    for setup in ("setup.cfg", "bench/setup.cfg"):
        parser = configparser.ConfigParser()
        parser.read(ROOT / setup)
        groups |= {g.strip() for g in parser["entry_points"]}
    return groups


# A path of the project's own trees: nova_disk_tuning/policy/, agent/volume/ ...
PROJECT_DIR = re.compile(
    r"(?<![\w/.-])((?:nova_disk_tuning|agent|policy|domxml|images|storage|common|conf|"
    r"audit|cmd|virt|bench|nova_disk_tuning_bench)/(?:[\w-]+/)*)"
)


def test_every_directory_of_the_tree_named_exists():
    folders = {str(pathlib.PurePath(f).parent) + "/" for f in _tracked()}
    missing = []
    for name in _prose_files():
        for match in PROJECT_DIR.finditer((ROOT / name).read_text()):
            path = match.group(1)
            if not any(f == path or f.endswith("/" + path) for f in folders):
                missing.append(f"{name}: {path}")
    assert not missing, "\n".join(sorted(set(missing)))


def test_every_module_named_exists():
    groups = _entry_point_groups()  # named like modules, and are not
    missing = []
    for name in _prose_files():
        for match in MODULE.finditer((ROOT / name).read_text()):
            dotted = match.group(0).rstrip(".")
            if dotted in groups or any(part.isupper() for part in dotted.split(".")):
                continue
            if not _resolves(dotted):
                missing.append(f"{name}: {dotted}")
    assert not missing, "\n".join(sorted(set(missing)))


@pytest.mark.parametrize("doc", ["README.rst", "doc/source/architecture.rst"])
def test_the_tree_of_the_docs_names_every_part_of_the_package(doc):
    from tests.unit.test_layers import RANK

    text = (ROOT / doc).read_text()
    for part in RANK:
        folder = ROOT / "nova_disk_tuning" / part
        shown = f"{part}/" if folder.is_dir() else f"{part}.py"
        # As a name of its own, not the end of another path (virt/libvirt/audit/).
        assert re.search(rf"(?<![\w/.]){re.escape(shown)}", text), f"{doc} lacks {shown}"


def test_the_check_sees_a_stale_name(tmp_path):
    assert [m.group(1) for m in PROJECT_DIR.finditer("in ``virt/libvirt/tuning/`` and ")] == [
        "virt/libvirt/tuning/"
    ]
    assert not _resolves("nova_disk_tuning.virt.libvirt.tuning")
    assert _resolves("nova_disk_tuning.policy.decide.tune_guest")
