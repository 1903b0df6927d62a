"""Every command, fed what a careless or hostile operator would give it.

Each case runs the real CLI in a new process and asserts: a non-zero exit, no
Python traceback, exactly one line on stderr, that this line names the bad
input, and that nothing new was left on disk (the work directory is listed
before and after; lock files under ``instances/locks`` are oslo.concurrency's
and kept by design, as Nova keeps them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nova_disk_tuning.images.sample import build_sample_image as build_image
from tests.functional.conftest import requires_root

pytestmark = requires_root
REPO = Path(__file__).resolve().parents[2]
UUID = "3f1e2d4c-5b6a-4789-8a0b-1c2d3e4f5a6b"
PROGRESS = re.compile(r".*: \d+%")
GOOD_CONF = "[libvirt]\nconnection_uri = test:///default\nvirt_type = qemu\n"


@dataclasses.dataclass
class Work:
    """A work directory: a nova.conf, an image, and helpers to make bad inputs."""

    root: Path
    image: str

    @property
    def instances(self) -> Path:
        return self.root / "instances"

    def conf(self, default: str = "", extra: str = "") -> Path:
        path = self.root / "nova.conf"
        path.write_text(
            f"[DEFAULT]\ninstances_path = {self.instances}\n{default}{GOOD_CONF}{extra}"
        )
        return path

    def file(self, name: str, data: bytes | str = b"") -> str:
        path = self.root / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def qcow2(self, name: str, size: str = "1M", *options: str) -> str:
        path = str(self.root / name)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", *options, path, size], check=True
        )
        return path


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    # (work) -> (argv after the config options, the text the error line must name)
    make: Callable[[Work], tuple[list[str], str]]
    # Lines of nova.conf: "default" under [DEFAULT], "extra" appended at the end.
    default: str = ""
    extra: str = ""
    config_args: Callable[[Work], list[str]] | None = None


def _spawn(*more: str) -> Callable[[Work], tuple[list[str], str]]:
    def make(work: Work) -> tuple[list[str], str]:
        return ["spawn", "vm1", "--image", work.image, *more], more[-1] if more else "vm1"

    return make


def _fifo(work: Work) -> str:
    path = str(work.root / "fifo")
    os.mkfifo(path)
    return path


def _dangling(work: Work) -> str:
    path = str(work.root / "dangling.raw")
    os.symlink(str(work.root / "nowhere"), path)
    return path


def _zero_link(work: Work) -> str:
    path = str(work.root / "zero.img")
    os.symlink("/dev/zero", path)
    return path


def _sparse(work: Work, name: str, size: int) -> str:
    path = work.root / name
    with open(path, "wb") as handle:
        handle.truncate(size)
    return str(path)


def _conf_dir(work: Work, data: bytes | None) -> str:
    """A --config-dir whose a.conf is ``data``, or a FIFO for None."""
    directory = work.root / "conf.d"
    directory.mkdir()
    if data is None:
        os.mkfifo(directory / "a.conf")
    else:
        (directory / "a.conf").write_bytes(data)
    return str(directory)


def _fifo_results(work: Work) -> str:
    run_dir = work.root / "run"
    run_dir.mkdir()
    os.mkfifo(run_dir / "results.json")
    return str(run_dir)


def _existing_instance(work: Work) -> None:
    run(work, work.conf(), ["spawn", "vm0", "--image", work.image, "--uuid", UUID], ok=True)


CASES = [
    # Configuration -----------------------------------------------------------
    Case(
        "config-file-dir",
        lambda w: (["list"], str(w.root)),
        config_args=lambda w: ["--config-file", str(w.root)],
    ),
    Case(
        "config-file-binary",
        lambda w: (["list"], "bad.conf"),
        config_args=lambda w: ["--config-file", w.file("bad.conf", b"\xff\xfe[DEFAULT]\n\x80")],
    ),
    Case(
        "config-file-missing",
        lambda w: (["list"], "missing.conf"),
        config_args=lambda w: ["--config-file", str(w.root / "missing.conf")],
    ),
    Case(
        "config-dir-missing",
        lambda w: (["list"], "no-such-dir"),
        config_args=lambda w: [
            "--config-file",
            str(w.conf()),
            "--config-dir",
            str(w.root / "no-such-dir"),
        ],
    ),
    Case("config-syntax", lambda w: (["list"], "nova.conf"), extra="[libvirt\nbroken = \n"),
    # Special files where a text file is expected: refused, never waited on.
    Case(
        "config-file-fifo",
        lambda w: (["list"], "fifo"),
        config_args=lambda w: ["--config-file", _fifo(w)],
    ),
    Case(
        "config-file-dev-zero",
        lambda w: (["list"], "/dev/zero"),
        config_args=lambda w: ["--config-file", "/dev/zero"],
    ),
    Case(
        "config-file-huge",
        lambda w: (["list"], "huge.conf"),
        config_args=lambda w: ["--config-file", _sparse(w, "huge.conf", 1 << 30)],
    ),
    Case(
        "config-dir-fifo",
        lambda w: (["list"], "a.conf"),
        config_args=lambda w: ["--config-file", str(w.conf()), "--config-dir", _conf_dir(w, None)],
    ),
    Case(
        "config-dir-latin1",
        lambda w: (["list"], "a.conf"),
        config_args=lambda w: [
            "--config-file",
            str(w.conf()),
            "--config-dir",
            _conf_dir(w, "[DEFAULT]\n# caf\xe9\n".encode("latin-1")),
        ],
    ),
    Case(
        "volume-fifo",
        lambda w: (["spawn", "vm1", "--image", w.image, "--volume", _fifo(w)], "fifo"),
    ),
    Case(
        "volume-dev-zero",
        lambda w: (["spawn", "vm1", "--image", w.image, "--volume", "/dev/zero"], "/dev/zero"),
    ),
    Case("audit-fifo", lambda w: (["audit", _fifo(w)], "fifo")),
    Case("audit-dev-zero", lambda w: (["audit", "/dev/zero"], "/dev/zero")),
    Case("audit-huge", lambda w: (["audit", _sparse(w, "huge.xml", 1 << 30)], "huge.xml")),
    Case("bench-render-fifo", lambda w: (["bench", "--render", _fifo_results(w)], "results.json")),
    Case(
        "instances-path-relative",
        lambda w: (["list"], "instances_path"),
        config_args=lambda w: [
            "--config-file",
            w.file("rel.conf", "[DEFAULT]\ninstances_path = relative/dir\n" + GOOD_CONF),
        ],
    ),
    Case(
        "instances-path-empty",
        lambda w: (["list"], "instances_path"),
        config_args=lambda w: [
            "--config-file",
            w.file("empty.conf", "[DEFAULT]\ninstances_path =\n" + GOOD_CONF),
        ],
    ),
    Case(
        "instances-path-is-file",
        lambda w: (["spawn", "vm1", "--image", w.image], "instances_path"),
        config_args=lambda w: [
            "--config-file",
            w.file("file.conf", f"[DEFAULT]\ninstances_path = {w.image}\n" + GOOD_CONF),
        ],
    ),
    Case(
        "images-type-unknown",
        lambda w: (["spawn", "vm1", "--image", w.image], "nosuch"),
        extra="images_type = nosuch\n",
    ),
    Case(
        "images-type-rbd-no-tool",
        lambda w: (["spawn", "vm1", "--image", w.image], "rbd"),
        extra="images_type = rbd\n",
    ),
    Case(
        "preallocate-images-bogus",
        lambda w: (["list"], "bogus"),
        default="preallocate_images = bogus\n",
    ),
    Case(
        "aio-mode-bogus",
        lambda w: (["list"], "fastest"),
        extra="[disk_tuning]\naio_mode = fastest\n",
    ),
    Case(
        "max-disk-ops-negative",
        lambda w: (["list"], "max_concurrent_disk_ops"),
        extra="[compute]\nmax_concurrent_disk_ops = -1\n",
    ),
    Case(
        "connection-uri-bogus",
        lambda w: (["spawn", "vm1", "--image", w.image], "nosuch"),
        extra="[libvirt]\nconnection_uri = nosuch:///x\n",
    ),
    # spawn: the image ----------------------------------------------------------
    Case(
        "image-missing",
        lambda w: (["spawn", "vm1", "--image", str(w.root / "nope.img")], "nope.img"),
    ),
    Case("image-directory", lambda w: (["spawn", "vm1", "--image", str(w.root)], str(w.root))),
    Case("image-empty", lambda w: (["spawn", "vm1", "--image", w.file("empty.img")], "empty.img")),
    Case("image-fifo", lambda w: (["spawn", "vm1", "--image", _fifo(w)], "fifo")),
    Case("image-dev-zero-link", lambda w: (["spawn", "vm1", "--image", _zero_link(w)], "zero.img")),
    Case(
        "image-truncated-qcow2",
        lambda w: (
            [
                "spawn",
                "vm1",
                "--image",
                w.file("trunc.qcow2", Path(w.qcow2("whole.qcow2")).read_bytes()[:100]),
            ],
            "trunc.qcow2",
        ),
    ),
    Case(
        "image-format-mismatch",
        lambda w: (["spawn", "vm1", "--image", w.image, "--image-format", "raw"], "declared raw"),
    ),
    Case(
        "image-backing-file",
        lambda w: (
            [
                "spawn",
                "vm1",
                "--image",
                w.qcow2("backed.qcow2", "1M", "-b", "/etc/hostname", "-F", "raw"),
            ],
            "backed.qcow2",
        ),
    ),
    Case(
        "image-1eib",
        lambda w: (["spawn", "vm1", "--image", w.qcow2("huge.qcow2", "1P")], "huge.qcow2"),
    ),
    Case(
        "image-larger-than-root-gb",
        lambda w: (
            ["spawn", "vm1", "--image", w.qcow2("big.qcow2", "2G"), "--root-gb", "1"],
            "big.qcow2",
        ),
    ),
    # spawn: the instance -------------------------------------------------------
    Case("name-with-space", lambda w: (["spawn", "vm 1", "--image", w.image], "vm 1")),
    Case("name-trailing-newline", lambda w: (["spawn", "vm1\n", "--image", w.image], "vm1")),
    Case("name-too-long", lambda w: (["spawn", "v" * 80, "--image", w.image], "v" * 80)),
    Case("name-slash", lambda w: (["spawn", "../etc", "--image", w.image], "../etc")),
    Case(
        "name-exists",
        lambda w: (_existing_instance(w) or ["spawn", "vm0", "--image", w.image], "vm0"),
    ),
    Case(
        "uuid-reused",
        lambda w: (
            _existing_instance(w) or ["spawn", "vm1", "--image", w.image, "--uuid", UUID],
            UUID,
        ),
    ),
    Case("uuid-malformed", _spawn("--uuid", "not-a-uuid")),
    Case("vcpus-zero", lambda w: (["spawn", "vm1", "--image", w.image, "--vcpus", "0"], "vcpus")),
    Case(
        "memory-zero",
        lambda w: (["spawn", "vm1", "--image", w.image, "--memory-mb", "0"], "memory_mb"),
    ),
    Case(
        "ephemeral-negative",
        lambda w: (["spawn", "vm1", "--image", w.image, "--ephemeral-gb", "-1"], "ephemeral_gb"),
    ),
    Case(
        "swap-negative",
        lambda w: (["spawn", "vm1", "--image", w.image, "--swap-mb", "-5"], "swap_mb"),
    ),
    Case("extra-spec-no-equals", _spawn("--extra-spec", "nonsense")),
    Case(
        "extra-spec-bad-iothreads",
        lambda w: (
            ["spawn", "vm1", "--image", w.image, "--extra-spec", "hw:disk_iothreads=x"],
            "hw:disk_iothreads",
        ),
    ),
    Case(
        "volume-missing-file",
        lambda w: (
            ["spawn", "vm1", "--image", w.image, "--volume", str(w.root / "vol.json")],
            "vol.json",
        ),
    ),
    Case(
        "volume-not-json",
        lambda w: (
            ["spawn", "vm1", "--image", w.image, "--volume", w.file("vol.json", "{nope")],
            "vol.json",
        ),
    ),
    Case(
        "volume-json-list",
        lambda w: (
            ["spawn", "vm1", "--image", w.image, "--volume", w.file("vol.json", "[1, 2]")],
            "vol.json",
        ),
    ),
    Case(
        "volume-binary",
        lambda w: (
            ["spawn", "vm1", "--image", w.image, "--volume", w.file("vol.json", b"\xff\xfe\x00")],
            "vol.json",
        ),
    ),
    Case(
        "volume-unknown-driver",
        lambda w: (
            [
                "spawn",
                "vm1",
                "--image",
                w.image,
                "--volume",
                w.file("vol.json", json.dumps({"driver_volume_type": "floppy", "data": {}})),
            ],
            "floppy",
        ),
    ),
    Case(
        "volume-device-missing",
        lambda w: (
            [
                "spawn",
                "vm1",
                "--image",
                w.image,
                "--volume",
                w.file(
                    "vol.json",
                    json.dumps(
                        {
                            "driver_volume_type": "local",
                            "data": {"device_path": "/dev/no-such-disk"},
                        }
                    ),
                ),
            ],
            "/dev/no-such-disk",
        ),
    ),
    Case(
        "kernel-directory",
        lambda w: (["spawn", "vm1", "--image", w.image, "--kernel", str(w.root)], str(w.root)),
    ),
    Case(
        "kernel-missing",
        lambda w: (
            ["spawn", "vm1", "--image", w.image, "--kernel", str(w.root / "vmlinuz")],
            "vmlinuz",
        ),
    ),
    Case(
        "ramdisk-without-kernel",
        lambda w: (["spawn", "vm1", "--image", w.image, "--ramdisk", w.image], "--kernel"),
    ),
    # other instance commands -----------------------------------------------------
    Case("destroy-unknown", lambda w: (["destroy", "ghost"], "ghost")),
    Case("show-unknown", lambda w: (["show", "ghost"], "ghost")),
    Case("power-on-unknown", lambda w: (["power-on", "ghost"], "ghost")),
    Case("power-off-unknown", lambda w: (["power-off", "ghost"], "ghost")),
    Case("explain-unknown", lambda w: (["explain", "ghost"], "ghost")),
    Case(
        "explain-name-and-disk",
        lambda w: (["explain", "ghost", "--disk", f"path={w.image}"], "not both"),
    ),
    Case("explain-disk-missing", lambda w: (["explain", "--disk", f"path={w.root}/nope"], "nope")),
    Case(
        "explain-disk-bad-key",
        lambda w: (["explain", "--disk", f"path={w.image},colour=blue"], "colour=blue"),
    ),
    Case(
        "explain-disk-directory", lambda w: (["explain", "--disk", f"path={w.root}"], str(w.root))
    ),
    # images ----------------------------------------------------------------------
    Case(
        "convert-src-missing",
        lambda w: (
            ["convert", str(w.root / "nope.qcow2"), str(w.root / "out.raw"), "-O", "raw"],
            "nope.qcow2",
        ),
    ),
    Case(
        "convert-src-directory",
        lambda w: (["convert", str(w.root), str(w.root / "out.raw"), "-O", "raw"], str(w.root)),
    ),
    Case("convert-dst-exists", lambda w: (["convert", w.image, w.image, "-O", "raw"], w.image)),
    Case(
        "convert-dst-missing-dir",
        lambda w: (
            ["convert", w.image, str(w.root / "no" / "out.raw"), "-O", "raw"],
            str(w.root / "no"),
        ),
    ),
    Case(
        "convert-dst-dangling-link",
        lambda w: (["convert", w.image, _dangling(w), "-O", "raw"], "dangling.raw"),
    ),
    Case("image-info-directory", lambda w: (["image-info", str(w.root)], str(w.root))),
    Case("image-info-fifo", lambda w: (["image-info", _fifo(w)], "fifo")),
    Case("image-info-missing", lambda w: (["image-info", str(w.root / "nope.img")], "nope.img")),
    # storage -----------------------------------------------------------------------
    Case("zero-missing", lambda w: (["zero", str(w.root / "nope.raw")], "nope.raw")),
    Case("zero-directory", lambda w: (["zero", str(w.root)], str(w.root))),
    Case(
        "zero-past-eof",
        lambda w: (
            ["zero", w.file("small.raw", b"x" * 4096), "--offset", "4096", "--length", "1M"],
            "small.raw",
        ),
    ),
    Case(
        "zero-bad-length",
        lambda w: (["zero", w.file("small.raw", b"x" * 4096), "--length", "lots"], "lots"),
    ),
    Case(
        "preallocate-directory",
        lambda w: (["preallocate", str(w.root), "--size", "1M"], str(w.root)),
    ),
    Case(
        "preallocate-bad-size",
        lambda w: (["preallocate", str(w.root / "p.raw"), "--size", "-1"], "-1"),
    ),
    Case(
        "preallocate-too-big",
        lambda w: (["preallocate", str(w.root / "p.raw"), "--size", "1000000T"], "p.raw"),
    ),
    Case(
        "preallocate-missing-dir",
        lambda w: (
            ["preallocate", str(w.root / "no" / "p.raw"), "--size", "1M"],
            str(w.root / "no"),
        ),
    ),
    # audit and cache -----------------------------------------------------------------
    Case("audit-file-missing", lambda w: (["audit", str(w.root / "dom.xml")], "dom.xml")),
    Case("audit-not-xml", lambda w: (["audit", w.file("dom.xml", "<domain><name>")], "dom.xml")),
    Case("audit-binary", lambda w: (["audit", w.file("dom.xml", b"\x00\xff\xfe")], "dom.xml")),
    Case("audit-unknown-domain", lambda w: (["audit", "--domain", "ghost"], "ghost")),
    Case("cache-prune-negative-age", lambda w: (["cache", "prune", "--max-age", "-1"], "-1")),
    Case("name-is-a-uuid", lambda w: (["spawn", UUID, "--image", w.image], UUID)),
    Case("zero-dev-zero", lambda w: (["zero", "/dev/zero", "--length", "4096"], "/dev/zero")),
    Case("zero-fifo", lambda w: (["zero", _fifo(w)], "fifo")),
    Case(
        "size-unicode-digits",
        lambda w: (["preallocate", str(w.root / "p.raw"), "--size", "\uff11\uff12"], "size"),
    ),
    Case(
        "power-off-timeout-nan", lambda w: (["power-off", "ghost", "--timeout", "nan"], "--timeout")
    ),
]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    return build_image(str(tmp_path_factory.mktemp("image")), size_mb=16, name="bad-inputs")


def run(work: Work, config: Path, argv: list[str], ok: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", str(config), *argv],
        capture_output=True,
        text=True,
        cwd=work.root,
        timeout=120,
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


# instances_path itself, its lock directory and the (empty) image cache
# directory may be created by any command that takes a lock; they hold no data.
INFRASTRUCTURE = {
    "instances",
    os.path.join("instances", "locks"),
    os.path.join("instances", "_base"),
}


def snapshot(root: Path) -> set[str]:
    seen = set()
    for directory, dirs, files in os.walk(root):
        rel = os.path.normpath(os.path.relpath(directory, root))
        if rel == os.path.join("instances", "locks"):
            continue
        seen.update(os.path.normpath(os.path.join(rel, name)) for name in dirs + files)
    return seen - INFRASTRUCTURE


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, image: str) -> None:
    work = Work(tmp_path, image)
    config = work.conf(case.default, case.extra)
    argv, names = case.make(work)
    prefix = case.config_args(work) if case.config_args else ["--config-file", str(config)]
    before = snapshot(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "nova_disk_tuning.cmd.main", *prefix, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    # Progress lines (every 10% when stderr is not a terminal) are not errors.
    lines = [
        line for line in result.stderr.splitlines() if line.strip() and not PROGRESS.fullmatch(line)
    ]
    assert len(lines) == 1, result.stderr
    assert names in lines[0], lines[0]
    assert snapshot(tmp_path) - before == set(), "left behind"


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
