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


# Each tox env and the Makefile target that does the same job.
TOX_ENV_TARGETS = {
    "testenv": ["unit"],
    "testenv:functional": ["functional"],
    "testenv:e2e": ["e2e"],
    "testenv:nova": ["nova-tests"],
    "testenv:onebox": ["onebox"],
    "testenv:pep8": ["pep8", "typecheck"],
    "testenv:genconfig": ["genconfig"],
    "testenv:docs": ["docs"],
    "testenv:releasenotes": ["releasenotes"],
}


def makefile_recipe(target: str) -> list[str]:
    """The commands of a Makefile target, as tox would spell them."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert match, f"the Makefile has no target {target}"
    commands = []
    for line in match.group(1).splitlines():
        line = line.strip().replace("$(PYTEST)", "pytest").replace("$(BIN)/", "")
        line = line.replace("$(LINT_TREES)", " ".join(makefile_trees()))
        # Environment assignments in front (NDT_FORBID_SKIPS=...): tox passes them on.
        commands.append(re.sub(r"^(\w+=\S*\s+)+", "", line))
    return commands


def tox_commands(section: str) -> list[str]:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    lines = tox[section]["commands"].splitlines()
    return [line.replace("{posargs}", "").strip() for line in lines if line.strip()]


def test_every_tox_env_runs_what_its_makefile_target_runs():
    for section, targets in TOX_ENV_TARGETS.items():
        make = [command for target in targets for command in makefile_recipe(target)]
        assert tox_commands(section) == make, section


def test_make_test_runs_every_job_that_tox_has():
    prerequisites = re.search(r"^test: (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert prerequisites
    jobs = set(prerequisites.group(1).split())
    assert {t for targets in TOX_ENV_TARGETS.values() for t in targets} - jobs == {"genconfig"}
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert set(TOX_ENV_TARGETS) == {
        s for s in tox.sections() if s.startswith("testenv") and s != "testenv:bench"
    }
