"""The documentation's sources name what exists: every option, every page in the toctree."""

import pathlib
import re

from nova_disk_tuning.conf import opts

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "doc" / "source"


def test_the_configuration_page_names_every_option_in_its_group():
    text = (SOURCE / "configuration" / "index.rst").read_text()
    overview = text.split("\nReference\n", 1)[0]
    missing = []
    for group, options in opts.list_opts():
        section = overview.split(f"``[{group}]``", 1)
        assert len(section) == 2, f"the overview has no [{group}]"
        body = section[1].split("\n``[", 1)[0]
        missing += [f"[{group}] {o.name}" for o in options if f"``{o.name}``" not in body]
    assert not missing, missing


def test_every_page_is_in_a_toctree():
    pages = {
        str(path.relative_to(SOURCE).with_suffix(""))
        for path in SOURCE.rglob("*.rst")
        if path.name != "index.rst" or path.parent != SOURCE
    }
    listed = set()
    for path in SOURCE.rglob("*.rst"):
        for block in re.findall(r"\.\. toctree::\n((?:   .*\n|\n)+)", path.read_text()):
            for entry in re.findall(r"^   ([\w/.-]+)$", block, re.M):
                listed.add(str((path.parent / entry).relative_to(SOURCE)))
    assert pages == listed, pages ^ listed
