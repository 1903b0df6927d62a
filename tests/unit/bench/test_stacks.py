"""The stacks module's pure parts: names, specs, the namespace command, its errors."""

from __future__ import annotations

import pytest
from nova_disk_tuning_bench.guest import stacks


def test_unknown_stack_is_one_line_naming_the_choices() -> None:
    with pytest.raises(stacks.StackError, match="choose one of stock, next"):
        stacks.by_name("future")


def test_current_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(stacks.ENV, raising=False)
    assert stacks.current() is stacks.STOCK
    monkeypatch.setenv(stacks.ENV, "next")
    assert stacks.current() is stacks.NEXT


def test_spec_changes_with_the_packages() -> None:
    other = stacks.Stack("next", stacks.NEXT.suite, (*stacks.NEXT.packages, "fio"))
    assert other.spec != stacks.NEXT.spec


def test_namespace_overlays_the_stack_usr_over_the_system() -> None:
    argv = stacks.namespace_argv(stacks.NEXT.root, ["qemu-img", "--version"])
    assert argv[:2] == ["unshare", "--mount"]
    assert "lowerdir=$0/usr:/usr" in argv[argv.index("-c") + 1]
    assert argv[-3:] == [str(stacks.NEXT.root), "qemu-img", "--version"]


def test_a_stack_with_another_spec_is_not_installed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(stacks, "STACKS_DIR", tmp_path)
    (tmp_path / "next").mkdir()
    (tmp_path / "next" / stacks.MARKER).write_text('{"spec": "old"}')
    assert stacks.NEXT.installed() is None
    with pytest.raises(stacks.StackError, match="make stack-next"):
        stacks.run(stacks.NEXT, ["true"])
    assert stacks.main(["run", "next", "--", "true"]) == 1
