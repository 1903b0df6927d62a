"""Commands of other distributions: found by entry point, or refused in one line."""

from __future__ import annotations

from importlib import metadata

import pytest

from nova_disk_tuning.cmd import main


def _entry_points(found: list[metadata.EntryPoint]):
    def entry_points(group: str | None = None, **_: object) -> list[metadata.EntryPoint]:
        return found if group == main.COMMANDS_GROUP else []

    return entry_points


def test_the_benchmarks_are_a_command_when_installed():
    names = {e.name for e in metadata.entry_points(group=main.COMMANDS_GROUP)}
    assert "bench" in names  # this test environment installs bench/
    parser = main.build_parser()
    args = parser.parse_args(["bench", "--quick"])
    assert args.func.__module__ == "nova_disk_tuning_bench.cli"


def test_without_the_benchmarks_bench_says_how_to_install_them(monkeypatch, capsys):
    monkeypatch.setattr(main.metadata, "entry_points", _entry_points([]))
    rc = main.main(["--config-file", "/dev/null", "bench", "guest", "--quick"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert "bench command is unavailable: it is not installed" in err[0]
    assert "pip install 'nova-disk-tuning[bench]'" in err[0]


def test_a_command_that_cannot_be_loaded_breaks_no_other(monkeypatch, capsys):
    broken = metadata.EntryPoint("bench", "no_such_module.cli", main.COMMANDS_GROUP)
    monkeypatch.setattr(main.metadata, "entry_points", _entry_points([broken]))
    assert main.build_parser().parse_args(["list"]).command == "list"
    rc = main.main(["--config-file", "/dev/null", "bench"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot be loaded (no_such_module.cli" in err


@pytest.mark.parametrize("argv", [["bench", "--help"]])
def test_the_stub_takes_any_arguments(monkeypatch, argv):
    monkeypatch.setattr(main.metadata, "entry_points", _entry_points([]))
    args = main.build_parser().parse_args(argv)
    assert args.command == "bench"


def test_a_plug_in_cannot_take_a_commands_name_or_break_the_parser(monkeypatch, tmp_path):
    module = tmp_path / "ndt_fake_commands.py"
    module.write_text(
        "def register(subparsers):\n"
        "    subparsers.add_parser('list')\n"  # argparse: conflicting subparser
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clashing = metadata.EntryPoint("list", "ndt_fake_commands", main.COMMANDS_GROUP)
    failing = metadata.EntryPoint("other", "ndt_fake_commands", main.COMMANDS_GROUP)
    monkeypatch.setattr(main.metadata, "entry_points", _entry_points([clashing, failing]))
    parser = main.build_parser()
    # "list" stays this package's; "other" raised in register() and is refused in one line.
    assert parser.parse_args(["list"]).func.__module__ == "nova_disk_tuning.cmd.instances"
    assert parser.parse_args(["other"]).command == "other"
