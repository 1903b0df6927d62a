"""The harness: what it passes to experiments and what it records when they fail."""

from __future__ import annotations

import logging
import sys
import types

import pytest
from nova_disk_tuning_bench import harness
from nova_disk_tuning_bench.model import Result


@pytest.fixture
def fake_module(monkeypatch):
    def install(run) -> str:
        module = types.ModuleType("nova_disk_tuning_bench.fake_experiment")
        module.run = run
        module.TARGETS = ("a target",)
        monkeypatch.setitem(sys.modules, module.__name__, module)
        return module.__name__

    return install


def test_passes_conf_and_progress_only_when_accepted(fake_module, conf, tmp_path):
    seen = {}

    def run(workdir, quick=False, repeat=3, conf=None):
        seen.update(workdir=workdir, quick=quick, repeat=repeat, conf=conf)
        return [Result("e", "v", "how", [1.0])]

    name = fake_module(run)
    outcome = harness.run_experiment("fake", name, str(tmp_path / "w"), True, 2, conf)
    assert outcome.status == "ok"
    assert seen == {"workdir": str(tmp_path / "w"), "quick": True, "repeat": 2, "conf": conf}
    assert outcome.targets == ["a target"]
    assert not (tmp_path / "w").exists()  # the work directory is cleaned up


def test_warnings_become_notes(fake_module, conf, tmp_path):
    def run(workdir, quick=False, repeat=3):
        logging.getLogger("nova_disk_tuning_bench.fake").warning("no %s here", "io_uring")
        return [Result("e", "v", "how", [1.0])]

    outcome = harness.run_experiment("fake", fake_module(run), str(tmp_path), False, 1, conf)
    assert outcome.notes == ["fake: no io_uring here"]


def test_a_failing_experiment_is_recorded_not_raised(fake_module, conf, tmp_path):
    def run(workdir, quick=False, repeat=3):
        raise OSError(28, "No space left on device")

    outcome = harness.run_experiment("fake", fake_module(run), str(tmp_path), False, 1, conf)
    assert outcome.status == "failed"
    assert "No space left on device" in outcome.error


def test_a_missing_module_is_reported(conf, tmp_path):
    outcome = harness.run_experiment(
        "ghost", "nova_disk_tuning_bench.no_such_module", str(tmp_path), False, 1, conf
    )
    assert outcome.status == "unavailable"
    assert "no_such_module" in outcome.notes[0]


def test_unknown_experiment_names_are_rejected(conf, tmp_path):
    with pytest.raises(ValueError, match="unknown experiment"):
        harness.run(conf, path=str(tmp_path), names=["nope"])


def test_filesystem_type_of_root_is_known():
    assert harness.machine_facts("/")["filesystem"] not in ("", "unknown")
