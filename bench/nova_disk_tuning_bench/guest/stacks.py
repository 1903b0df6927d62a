"""Virtualisation stacks (libvirt + QEMU) the e2e suite and ``bench guest`` run on.

``stock`` is what the host has installed (Debian 12: libvirt 9.0, QEMU 7.2).
``next`` is libvirt 11.3 and QEMU 10.0 from ``bookworm-backports``: the
versions Nova's next minimum (libvirt 10.0, QEMU 8.2.2) asks for, and the
first where per-queue IOThread mapping (libvirt 10.0 + QEMU 9.0) exists.

The next stack is never installed into the system: apt, with a private
source list, list and archive directory, downloads what the backports
packages need *beyond what is installed* (so the set follows the host), and
``dpkg -x`` unpacks it under :data:`STACKS_DIR`. A command runs on it in a
private mount namespace where ``/usr`` is an overlay of the stack's ``usr``
over the system's (:func:`run`): there, and only there, ``libvirtd``,
``qemu-system-x86_64``, ``qemu-img`` and ``libvirt.so`` are the new ones. The
system's own libvirtd, if any, keeps its QEMU; the namespace, and the
overlay with it, ends with the command, whatever kills it.

Installing builds in a stage directory and renames it into place under a
lock, so a killed install leaves the old stack or none, never half of one
(a stale stage is removed by the next install).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nova_disk_tuning_bench.guest.errors import GuestBenchError

STACKS_DIR = Path("/var/cache/nova-disk-tuning/stacks")
ENV = "NDT_STACK"
MARKER = "ndt-stack.json"
# Debian 12 is merged-/usr: the packages' /bin, /sbin and /lib are /usr's.
MERGED = ("bin", "sbin", "lib", "lib64")
# Directories whose system copy must not show through the overlay: QEMU 10.0's
# qom-list-types loads every module it finds, and loading QEMU 7.2's (the system's
# qemu-system-modules-*) kills it, so libvirt's capability probe fails with
# "Unable to read from monitor: Connection reset by peer" (seen here).
OPAQUE = ("usr/lib/x86_64-linux-gnu/qemu",)


class StackError(GuestBenchError):
    msg_fmt = "stack: %(reason)s"


@dataclass(frozen=True)
class Stack:
    name: str
    # The apt suite the packages come from; None: the host's installed packages.
    suite: str | None = None
    packages: tuple[str, ...] = ()

    @property
    def root(self) -> Path:
        return STACKS_DIR / self.name

    @property
    def spec(self) -> str:
        """What the stack is made of; an installed stack with another spec is rebuilt."""
        text = json.dumps([self.suite, sorted(self.packages), OPAQUE])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def installed(self) -> dict[str, object] | None:
        """The marker of an installed stack with this spec, or None."""
        if self.suite is None:
            return {"name": self.name}
        try:
            marker = json.loads((self.root / MARKER).read_text())
        except (OSError, ValueError):
            return None
        return marker if marker.get("spec") == self.spec else None


STOCK = Stack("stock")
NEXT = Stack(
    "next",
    suite="bookworm-backports",
    packages=(
        "qemu-system-x86",
        "qemu-utils",
        "libvirt-daemon",
        "libvirt-daemon-driver-qemu",
        "libvirt-daemon-log",
    ),
)
STACKS = {s.name: s for s in (STOCK, NEXT)}


def by_name(name: str) -> Stack:
    try:
        return STACKS[name]
    except KeyError:
        raise StackError(
            reason=f"unknown stack {name!r}: choose one of {', '.join(STACKS)}"
        ) from None


def current() -> Stack:
    """The stack this process runs on (``NDT_STACK``, set by :func:`run`)."""
    return by_name(os.environ.get(ENV, STOCK.name))


# ---------------------------------------------------------------------- install


def _codename() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return "unknown"


def _apt_options(work: Path) -> list[str]:
    return [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={work / 'sources'}",
        "-o", f"Dir::State::Lists={work / 'lists'}",
        "-o", f"Dir::Cache={work / 'cache'}",
        "-o", "APT::Get::Assume-Yes=true",
        "-q",
    ]  # fmt: skip


def _sources(work: Path, suite: str) -> None:
    """The host's own Debian sources, plus ``suite`` from the same mirror."""
    parts = work / "sources"
    parts.mkdir(parents=True)
    system = Path("/etc/apt/sources.list.d")
    for source in sorted(system.glob("*.sources")) + sorted(system.glob("*.list")):
        shutil.copy(source, parts / source.name)
    if Path("/etc/apt/sources.list").is_file():
        shutil.copy("/etc/apt/sources.list", parts / "sources.list.list")
    mirror = os.environ.get("NDT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    (parts / "ndt-stack.sources").write_text(
        f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    for sub in ("lists/partial", "cache/archives/partial"):
        (work / sub).mkdir(parents=True)


def _apt(work: Path, *args: str) -> None:
    argv = ["apt-get", *_apt_options(work), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
        raise StackError(
            reason=f"apt-get {' '.join(args[:2])} failed ({proc.returncode}): "
            f"{' '.join(last)}; check the network and the mirror (NDT_DEBIAN_MIRROR)"
        )


def _unpack(debs: Sequence[Path], into: Path) -> None:
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    usr = into / "usr"
    for top in MERGED:
        src = into / top
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, usr / top, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(src)
    for opaque in OPAQUE:
        if (into / opaque).is_dir():
            # overlayfs honours the opaque mark in a lower layer too (Linux >= 4.13).
            os.setxattr(into / opaque, "trusted.overlay.opaque", b"y")


def _probe_versions(root: Path) -> dict[str, str]:
    """libvirtd's and QEMU's own version lines, run from the new tree."""
    versions = {}
    for key, binary in (("libvirt", "sbin/libvirtd"), ("qemu", "bin/qemu-system-x86_64")):
        out = run_capture(root, [f"/usr/{binary}", "--version"])
        versions[key] = (
            out.splitlines()[0].split()[-1]
            if key == "libvirt"
            else (out.split("version", 1)[1].split()[0])
        )
    return versions


def install(stack: Stack) -> dict[str, object]:
    """Make ``stack`` ready (idempotent); returns its marker."""
    if (marker := stack.installed()) is not None:
        return marker  # the host's own stack, or one already unpacked
    assert stack.suite is not None  # installed() is never None for the host's stack
    if os.geteuid() != 0:
        raise StackError(reason=f"installing stack {stack.name} needs root (apt, dpkg-deb)")
    if _codename() != "bookworm":
        raise StackError(
            reason=f"stack {stack.name} is built from {stack.suite} for Debian 12; this host "
            f"is {_codename()}: run the tests on its own libvirt and QEMU (stack stock)"
        )
    STACKS_DIR.mkdir(parents=True, exist_ok=True)
    with _locked(STACKS_DIR / f"{stack.name}.lock"):
        if (marker := stack.installed()) is not None:
            return marker
        stage = STACKS_DIR / f"{stack.name}.ndt-stage"
        shutil.rmtree(stage, ignore_errors=True)  # a killed install's
        work = stage / "apt"
        _sources(work, stack.suite)
        _apt(work, "update")
        _apt(work, "install", "--download-only", "--no-install-recommends",
             "-t", stack.suite, *stack.packages)  # fmt: skip
        debs = sorted((work / "cache" / "archives").glob("*.deb"))
        tree = stage / "tree"
        _unpack(debs, tree)
        marker = {
            "name": stack.name,
            "spec": stack.spec,
            "suite": stack.suite,
            "debs": [d.name for d in debs],
            **_probe_versions(tree),
        }
        (tree / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        old = STACKS_DIR / f"{stack.name}.ndt-old"
        shutil.rmtree(old, ignore_errors=True)
        if stack.root.exists():
            stack.root.rename(old)
        tree.rename(stack.root)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)
        return marker


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------------- run

# Inside the new mount namespace: /usr becomes the stack's usr over the system's.
OVERLAY = 'mount -t overlay ndt-stack -o "lowerdir=$0/usr:/usr" /usr && exec "$@"'


def namespace_argv(root: Path, argv: Sequence[str]) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", OVERLAY, str(root), *argv]  # fmt: skip


def run_capture(root: Path, argv: Sequence[str]) -> str:
    proc = subprocess.run(namespace_argv(root, argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StackError(
            reason=f"{' '.join(argv)} on the stack in {root} failed ({proc.returncode}): "
            f"{proc.stderr.strip()[-300:]}"
        )
    return proc.stdout


def run(stack: Stack, argv: Sequence[str]) -> int:
    """Run ``argv`` on ``stack``; returns its exit status."""
    env = {**os.environ, ENV: stack.name}
    if stack.suite is None:
        return subprocess.call(list(argv), env=env)
    if stack.installed() is None:
        raise StackError(
            reason=f"stack {stack.name} is not installed: run `make stack-{stack.name}` "
            f"(python -m nova_disk_tuning_bench.guest.stacks install {stack.name})"
        )
    return subprocess.call(namespace_argv(stack.root, argv), env=env)


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nova_disk_tuning_bench.guest.stacks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="download and unpack a stack").add_argument("stack")
    runner = sub.add_parser("run", help="run a command with the stack as /usr")
    runner.add_argument("stack")
    runner.add_argument("argv", nargs=argparse.REMAINDER)
    ns = parser.parse_args(args)
    try:
        stack = by_name(ns.stack)
        if ns.command == "install":
            marker = install(stack)
            print(f"stack {stack.name}: libvirt {marker.get('libvirt', 'host')}, "
                  f"QEMU {marker.get('qemu', 'host')} ({stack.root})")  # fmt: skip
            return 0
        argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
        if not argv:
            parser.error("run: name a command")
        return run(stack, argv)
    except StackError as exc:
        print(f"nova-disk-tuning: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
