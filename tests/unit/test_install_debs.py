"""The install step of `make demo` / `make test`, run for real with stand-ins.

`make system-deps` runs tools/install-debs, which asks bindep what is missing
and hands it to apt-get. Here bindep, apt-get and id are stand-in scripts first
on PATH, so the real Makefile target and script run on any machine, whatever
it has installed, and nothing is installed.
"""

import os
import pathlib
import shutil
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MISSING = ["qemu-utils", "libvirt-daemon-driver-qemu", "g++"]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _script(path: pathlib.Path, body: str) -> pathlib.Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def standins(tmp_path):
    """Stand-in bindep, apt-get and id; returns (bin dir, apt log, bindep path)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "apt.log"
    bindep = _script(bindir / "bindep", 'printf "%s\\n" ' + " ".join(MISSING) + "\nexit 1\n")
    _script(bindir / "apt-get", f'echo "$*" >> {log}\n')
    return bindir, log, bindep


def _make(bindir, bindep, uid):
    _script(bindir / "id", f'[ "$1" = "-u" ] && echo {uid} || /usr/bin/id "$@"\n')
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "system-deps", f"BINDEP={bindep}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_root_installs_all_missing_in_one_call(standins):
    bindir, log, bindep = standins
    result = _make(bindir, bindep, 0)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    installs = [c for c in calls if c.split()[:1] != ["update"]]
    assert len(installs) == 1, calls
    assert installs[0].split()[-3:] == MISSING
    assert "install" in installs[0].split()
    assert calls[0].startswith("update"), "apt-get update runs before the install"


def test_non_root_prints_one_command_and_fails(standins):
    bindir, log, bindep = standins
    result = _make(bindir, bindep, 1000)
    assert result.returncode != 0
    assert not log.exists(), "apt-get must not run without root"
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("apt-get install")]
    assert len(lines) == 1, result.stderr
    assert lines[0].split()[-3:] == MISSING


def test_nothing_missing_touches_no_apt(standins):
    bindir, log, _ = standins
    quiet = _script(bindir / "bindep-ok", "exit 0\n")
    result = _make(bindir, quiet, 0)
    assert result.returncode == 0, result.stderr
    assert not log.exists()


def test_broken_bindep_is_one_line(standins):
    bindir, log, _ = standins
    broken = _script(bindir / "bindep-broken", "echo 'parse error' >&2\nexit 2\n")
    result = _make(bindir, broken, 0)
    assert result.returncode != 0
    assert "bindep failed" in result.stderr
    assert not log.exists()
