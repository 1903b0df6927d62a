"""The layers import in one direction, the decision core at the bottom.

``conf -> storage -> images -> domxml -> policy -> host -> audit`` is the
core; the Nova drop-in (``nova/``) and the standalone agent (``agent/``) use
it as siblings, neither importing the other; the CLI (``cmd/``) sits on the
agent; the benchmarks are another distribution (``bench/``) that nothing
here imports. ``common`` and ``exception`` are below them all.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "nova_disk_tuning"
BENCH = ROOT / "bench" / "nova_disk_tuning_bench"
# Rank of each part of the package; a part imports only parts of lower or
# equal rank, except its sibling.
RANK = {
    "common": 0,
    "exception": 0,
    "conf": 1,
    "storage": 2,
    "images": 3,
    "domxml": 4,
    "policy": 5,
    "host": 6,
    "audit": 7,
    "agent": 8,
    "nova": 8,
    "cmd": 9,
}
# Equal rank, and neither may import the other.
SIBLINGS = {"agent", "nova"}


def _part(module: str) -> str | None:
    """The part of nova_disk_tuning ``module`` belongs to (None: not ours, or the root)."""
    parts = module.split(".")
    if parts[0] != "nova_disk_tuning" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def _imports(path: pathlib.Path, root: pathlib.Path = ROOT):
    """Every module ``path`` imports, relative imports resolved against its package."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                # The package the file is in (for __init__.py, its own).
                package = list(path.relative_to(root).parts[:-1])
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            if module:
                yield module
                yield from (f"{module}.{alias.name}" for alias in node.names)


def _files(part: str, root: pathlib.Path = PACKAGE) -> list[pathlib.Path]:
    folder = root / part
    if folder.is_dir():
        return sorted(folder.rglob("*.py"))
    return [root / f"{part}.py"]


def _offenders(part: str, root: pathlib.Path = PACKAGE) -> list[str]:
    found = []
    for path in _files(part, root):
        for module in _imports(path, root.parent):
            target = _part(module)
            if target is None or target == part:
                continue
            if RANK[target] > RANK[part] or {target, part} == SIBLINGS:
                found.append(f"{path.relative_to(root.parent)} imports {module}")
    return found


@pytest.mark.parametrize("part", sorted(RANK))
def test_each_part_imports_only_the_parts_below_it(part):
    assert _files(part)[0].exists(), part
    assert not _offenders(part), "\n".join(_offenders(part))


def test_every_module_belongs_to_a_part():
    loose = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.iterdir()
        if path.name != "__init__.py"
        and not path.name.startswith((".", "__pycache__"))
        and path.name.removesuffix(".py") not in RANK
    ]
    assert not loose, f"give these a rank in RANK: {loose}"


def test_the_check_sees_a_violation(tmp_path):
    (tmp_path / "pkg" / "policy").mkdir(parents=True)
    (tmp_path / "pkg" / "policy" / "x.py").write_text(
        "from nova_disk_tuning.agent.imagebackend.file import Flat\n"
    )
    assert _offenders("policy", root=tmp_path / "pkg")


def test_the_check_sees_siblings(tmp_path):
    (tmp_path / "pkg" / "nova").mkdir(parents=True)
    (tmp_path / "pkg" / "nova" / "x.py").write_text("from nova_disk_tuning.agent import loader\n")
    assert _offenders("nova", root=tmp_path / "pkg")


AGENT = "nova_disk_tuning.agent"
# Inside the agent: backends and volume drivers report facts; they never
# decide, and they know nothing of the driver that calls them.
AGENT_FORBIDDEN = {
    "agent/imagebackend": (
        "nova_disk_tuning.policy.decide",
        f"{AGENT}.driver",
        f"{AGENT}.spawn",
    ),
    "agent/volume": ("nova_disk_tuning.policy.decide", f"{AGENT}.driver", f"{AGENT}.spawn"),
}


@pytest.mark.parametrize("folder", sorted(AGENT_FORBIDDEN))
def test_producers_report_facts_and_never_decide(folder):
    assert (PACKAGE / folder).is_dir(), folder
    found = [
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        for module in _imports(path)
        if any(module == f or module.startswith(f + ".") for f in AGENT_FORBIDDEN[folder])
    ]
    assert not found


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


def test_only_the_drop_in_reaches_the_drop_in():
    """The CLI and the rest run on hosts without Nova: nothing but nova/ imports it."""
    found = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted([*PACKAGE.rglob("*.py"), *BENCH.rglob("*.py")])
        if not path.is_relative_to(PACKAGE / "nova")
        for module in _imports(path)
        if _part(module) == "nova"
    ]
    assert not found


def test_relative_imports_are_seen(tmp_path):
    package = tmp_path / "nova_disk_tuning" / "policy"
    package.mkdir(parents=True)
    (package / "x.py").write_text("from ..agent import loader\nfrom . import facts\n")
    found = list(_imports(package / "x.py", tmp_path))
    assert "nova_disk_tuning.agent.loader" in found and "nova_disk_tuning.policy.facts" in found
    assert _offenders("policy", root=tmp_path / "nova_disk_tuning")


def test_only_the_nova_integration_imports_nova():
    """Nova is imported in nova_disk_tuning/nova/ only.

    The agent, the CLI and the benchmarks run on hosts without Nova; the
    drop-in reaches the project through the core, never the other way round.
    """
    offenders = []
    for path in sorted([*PACKAGE.rglob("*.py"), *BENCH.rglob("*.py")]):
        inside = path.is_relative_to(PACKAGE / "nova")
        for module in _imports(path):
            if module.split(".")[0] == "nova" and not inside:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_no_runtime_module_imports_the_benchmarks():
    found = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for module in _imports(path)
        if module.split(".")[0] == "nova_disk_tuning_bench"
    ]
    assert not found


def test_the_benchmarks_never_import_the_nova_drop_in():
    assert BENCH.is_dir()
    found = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted(BENCH.rglob("*.py"))
        for module in _imports(path)
        if _part(module) == "nova"
    ]
    assert not found


def test_the_nova_shim_only_reexports_the_driver():
    shim = ROOT / "nova" / "virt" / "disk_tuning" / "__init__.py"
    assert sorted(_imports(shim)) == [
        "nova_disk_tuning.nova.driver",
        "nova_disk_tuning.nova.driver.LibvirtDriver",
    ]
    # nova/ and nova/virt/ stay Nova's: no __init__.py of ours there.
    assert not (ROOT / "nova" / "__init__.py").exists()
    assert not (ROOT / "nova" / "virt" / "__init__.py").exists()
