"""README.rst renders cleanly and keeps its two-command quick start."""

import pathlib
import re

import docutils.core

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.rst").read_text()


def test_readme_renders_without_warnings():
    docutils.core.publish_string(
        README, writer="html", settings_overrides={"halt_level": 2, "report_level": 2}
    )


def test_quick_start_is_make_demo_and_make_test():
    section = README.split("Quick start\n===========\n", 1)[1]
    block = section.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    commands = re.findall(r"^    (\S.*?)\s+#", block, re.MULTILINE)
    assert commands == ["make demo", "make test"]


def test_makefile_has_the_quick_start_targets():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)
