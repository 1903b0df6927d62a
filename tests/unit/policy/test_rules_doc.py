"""doc/source/tuning-rules.rst is the policy's decision table, rendered by policy/rules.py."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from nova_disk_tuning.policy import rules

ROOT = pathlib.Path(__file__).resolve().parents[3]
DOC = ROOT / "doc" / "source" / "tuning-rules.rst"


def test_committed_document_is_up_to_date():
    assert DOC.read_text() == rules.render(), (
        "doc/source/tuning-rules.rst is stale: run `make docs-rules` and commit it"
    )


def test_module_prints_the_document_on_stdout_and_nothing_else():
    proc = subprocess.run(
        [sys.executable, "-m", "nova_disk_tuning.policy.rules"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert proc.stdout == rules.render()
    # The scenarios' expected warnings must not end up in a redirected file or a terminal.
    assert proc.stderr == ""


def _scenario(prefix: str) -> rules.Scenario:
    (found,) = [s for s in rules.SCENARIOS if s.situation.startswith(prefix)]
    return found


@pytest.mark.parametrize(
    ("situation", "cache", "io", "discard", "no_unref", "iothread"),
    [
        ("raw file, sparse (", "none", "threads", None, None, 1),
        ("qcow2 overlay, sparse, io_uring disabled", "none", "threads", None, None, 1),
        ("raw file, fully allocated", "none", "native", None, None, 1),
        ("raw file, preallocate_images=space but", "none", "threads", None, None, 1),
        ("qcow2 overlay, sparse (", "none", "io_uring", None, None, 1),
        ("qcow2 overlay, preallocate_images=performance", "none", "native", None, None, 1),
        ("block device", "none", "native", None, None, 1),
        ("network disk", "none", None, None, None, 1),
        ("shareable", "none", "native", None, None, 1),
        ("raw file where O_DIRECT does not work", "writeback", "threads", None, None, 1),
        ("raw file, disk_cachemodes file=writeback", "writeback", "threads", None, None, 1),
        ("aio_mode=native forced", "writeback", "threads", None, None, 1),
        ("NFS volume (driver hint native", "none", "native", None, None, 1),
        ("NFS volume, use_default_aio_mode_for_volumes", "none", "threads", None, None, 1),
        ("aio_mode=io_uring, raw file", "none", "io_uring", None, None, 1),
        ("aio_mode=io_uring, LVM", "none", "native", None, None, 1),
        ("hw_disk_discard=unmap, sparse raw", "none", "threads", "unmap", None, 1),
        ("hw_disk_discard=unmap, preallocated raw", "none", "native", "unmap", None, 1),
        ("hw_disk_discard=unmap, preallocated qcow2", "none", "native", "unmap", "on", 1),
        ("SATA disk", "none", "native", None, None, None),
        ("iothreads=0", "none", "native", None, None, None),
    ],
)
def test_scenarios_show_the_policy_rules(situation, cache, io, discard, no_unref, iothread):
    tuning = rules.decide_scenario(_scenario(situation))
    got = (
        tuning.cache.value,
        tuning.io.value,
        tuning.discard.value,
        tuning.discard_no_unref.value,
        tuning.iothread.value,
    )
    assert got == (cache, io, discard, no_unref, iothread)


def test_every_scenario_is_a_row_with_its_reasons():
    text = rules.render()
    assert text.count("\n   * - ") == len(rules.SCENARIOS) + 1  # plus the header row
    # Reasons come from the policy, word for word.
    forced = rules.decide_scenario(_scenario("aio_mode=native forced"))
    assert "demoted to threads" in forced.io.reason
    assert forced.io.reason in text
    assert "gave up keeping this preallocated disk allocated" in text
    assert "ignored ([libvirt] use\\_default\\_aio\\_mode\\_for\\_volumes)" not in text
    assert "ignored ([libvirt] use_default_aio_mode_for_volumes)" in text


def test_header_says_how_to_regenerate():
    head = rules.render().splitlines()[:3]
    assert head[0].startswith(".. This file is generated")
    assert any("make docs-rules" in line for line in head)


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("O_DIRECT works", "O_DIRECT works"),
        ("a *b* `c` |d|", "a \\*b\\* \\`c\\` \\|d\\|"),
        ("reference_ here", "reference\\_ here"),
        ("ends_", "ends\\_"),
    ],
)
def test_escape(text, escaped):
    assert rules._escape(text) == escaped


def test_readme_summary_is_up_to_date():
    readme = (ROOT / "README.rst").read_text()
    assert rules.render_summary() in readme, (
        "README.rst's tuning-rules summary is stale: run `make docs-rules` and commit it"
    )
    assert rules.with_summary(readme) == readme
