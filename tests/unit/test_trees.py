"""The Makefile, tox.ini and mypy check the same trees, and every package is in them."""

import configparser
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Python packages of the repository (the benchmarks' one lives in bench/).
PACKAGES = {"nova_disk_tuning", "bench/nova_disk_tuning_bench"}


def makefile_trees() -> list[str]:
    match = re.search(r"^LINT_TREES := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile names its LINT_TREES"
    return match.group(1).split()


def tox_pep8_commands() -> list[str]:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    return [line.strip() for line in tox["testenv:pep8"]["commands"].splitlines() if line.strip()]


def test_tox_lints_what_the_makefile_lints():
    trees = makefile_trees()
    commands = tox_pep8_commands()
    assert f"ruff check {' '.join(trees)}" in commands
    assert f"ruff format --check {' '.join(trees)}" in commands
    assert "mypy" in commands


def test_every_tree_exists_and_every_package_is_linted_and_type_checked():
    trees = makefile_trees()
    assert all((ROOT / tree).exists() for tree in trees), trees
    assert all(any(p == t or p.startswith(t + "/") for t in trees) for p in PACKAGES)
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    checked = {f.strip() for f in setup["mypy"]["files"].split(",")}
    assert checked == PACKAGES


def test_every_python_package_of_the_repository_is_known():
    tracked = subprocess.run(
        ["git", "ls-files", "*__init__.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = {
        str(pathlib.PurePath(init).parent)
        for init in tracked
        if not init.startswith(("tests/", "nova/virt/disk_tuning/"))
        and not (ROOT / pathlib.PurePath(init).parent.parent / "__init__.py").exists()
    }
    assert found == PACKAGES, found
