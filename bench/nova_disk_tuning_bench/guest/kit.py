"""The guest kit: Debian's kernel plus a busybox initramfs with fio, built once and cached.

The kit is built from two Debian packages (``linux-image-<abi>-amd64`` and
``busybox-static``) fetched with ``apt-get download``, plus the host's own fio
and its libraries (:mod:`~nova_disk_tuning_bench.guest.initramfs`), so it
needs nothing but the Debian archive. It is cached under
``/var/cache/nova-disk-tuning/guest/<key>`` (override the root with
``NDT_GUEST_CACHE``), where the key names the kernel, busybox and fio
versions and a hash of the builder. A build happens in a temporary directory
beside the cache entry and is renamed into place, so an interrupted build
never leaves a half kit; concurrent builds serialise on a lock file.

What a guest booted from the kit does is :mod:`~nova_disk_tuning_bench.guest.console`.
Run ``python -m nova_disk_tuning_bench.guest.kit`` to build or find the kit
and print its paths.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging as stdlib_logging  # only to configure the __main__ output
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from oslo_log import log as logging

from nova_disk_tuning_bench.guest import initramfs
from nova_disk_tuning_bench.guest.errors import GuestKitError

LOG = logging.getLogger(__name__)

DEFAULT_CACHE_ROOT = Path("/var/cache/nova-disk-tuning/guest")
# Bump when the initramfs layout changes in a way the init script hash does not show.
BUILDER_VERSION = "2"
# Kits not used for this long are pruned: another checkout (another builder hash)
# may still boot its own kit from the same cache root now.
PRUNE_AFTER = 3 * 24 * 3600


@dataclasses.dataclass(frozen=True)
class GuestKit:
    """A built guest: pass ``kernel`` and ``initrd`` to ``<os>`` for direct boot."""

    key: str
    directory: Path
    kernel: Path
    initrd: Path
    kernel_release: str
    modules: tuple[str, ...]
    fio_version: str


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, check=False, timeout=900
        )
    except FileNotFoundError as exc:
        raise GuestKitError(
            f"{argv[0]} is not installed; it is needed to build the guest kit (see bindep.txt)"
        ) from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GuestKitError(f"{' '.join(argv)} failed with exit code {proc.returncode}: {last}")
    return proc.stdout


def _kernel_package() -> str:
    """The versioned kernel package that Debian's linux-image-amd64 points at now."""
    for attempt in range(2):
        try:
            out = _run(["apt-cache", "depends", "linux-image-amd64"])
        except GuestKitError:
            out = ""
        for line in out.splitlines():
            m = re.match(r"\s*Depends:\s*(linux-image-\S+-amd64)\s*$", line)
            if m:
                return m.group(1)
        if attempt == 0:
            # A fresh machine may have no package lists yet (apt-get update not run).
            LOG.info("apt-cache knows no linux-image-amd64; running apt-get update")
            _run(["apt-get", "update", "-qq"])
    raise GuestKitError(
        "apt-cache depends linux-image-amd64 names no linux-image-<abi>-amd64 package "
        "even after apt-get update"
    )


def _package_version(package: str) -> str:
    out = _run(["apt-cache", "show", "--no-all-versions", package])
    m = re.search(r"^Version:\s*(\S+)", out, re.MULTILINE)
    if not m:
        raise GuestKitError(f"apt-cache show {package} printed no Version; run apt-get update")
    return m.group(1)


def fio_version(fio: str = initramfs.FIO) -> str:
    """``fio --version`` of the host's fio (the one the kit carries)."""
    try:
        return _run([fio, "--version"]).strip()
    except GuestKitError as exc:
        raise GuestKitError(f"{fio} does not run: install the Debian package fio ({exc})") from None


def _builder_hash() -> str:
    h = hashlib.sha256()
    h.update(BUILDER_VERSION.encode())
    h.update(initramfs.INIT_SCRIPT.encode())
    h.update(",".join(initramfs.WANTED_MODULES).encode())
    return h.hexdigest()[:12]


def _kit_key(kernel_pkg: str, kernel_ver: str, busybox_ver: str, fio: str) -> str:
    text = f"{kernel_pkg}_{kernel_ver}_bb{busybox_ver}_{fio}"
    return f"{re.sub(r'[^A-Za-z0-9.+-]', '_', text)}_{_builder_hash()}"


def _load_kit(directory: Path) -> GuestKit:
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # Marks the kit as in use, for _prune_other_kits.
    os.utime(manifest_path)
    return GuestKit(
        key=manifest["key"],
        directory=directory,
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        kernel_release=manifest["kernel_release"],
        modules=tuple(manifest["modules"]),
        fio_version=manifest["fio_version"],
    )


def _complete(directory: Path) -> bool:
    return all((directory / n).is_file() for n in ("manifest.json", "vmlinuz", "initrd.img"))


def cache_root() -> Path:
    return Path(os.environ.get("NDT_GUEST_CACHE", str(DEFAULT_CACHE_ROOT)))


def build_guest_kit(root: Path | None = None) -> GuestKit:
    """The cached kit for Debian's current kernel and the host's fio; built if missing."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    kernel_pkg = _kernel_package()
    key = _kit_key(
        kernel_pkg,
        _package_version(kernel_pkg),
        _package_version("busybox-static"),
        fio_version(),
    )
    final = root / key
    if _complete(final):
        return _load_kit(final)

    # Serialise builders (parallel runs); the winner's kit serves everyone.
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(final):
            return _load_kit(final)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
        try:
            kit_dir = work / "kit"
            kit_dir.mkdir()
            _assemble(work, kit_dir, kernel_pkg, key)
            if final.exists():
                # A half kit cannot exist under the final name (rename is atomic), but an
                # old entry someone damaged by hand can: replace it.
                shutil.rmtree(final)
            os.rename(kit_dir, final)
            dir_fd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        LOG.info("built guest kit %s in %.1f s", final, time.monotonic() - started)
        _prune_other_kits(root, keep=final)
        return _load_kit(final)


def _prune_other_kits(root: Path, keep: Path) -> None:
    # A .build-* dir is what a killed build left behind: nobody else builds while we
    # hold the lock. Kits of other keys may belong to another checkout that boots them
    # right now, so only those unused for PRUNE_AFTER go.
    now = time.time()
    for entry in root.iterdir():
        if entry == keep or not entry.is_dir():
            continue
        stale = False
        if entry.name.startswith(".build-"):
            stale = True
        elif not entry.name.startswith(".") and _complete(entry):
            stale = now - (entry / "manifest.json").stat().st_mtime > PRUNE_AFTER
        if stale:
            LOG.info("removing stale guest kit entry %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _assemble(work: Path, kit_dir: Path, kernel_pkg: str, key: str) -> None:
    download = work / "debs"
    download.mkdir()
    _run(["apt-get", "download", kernel_pkg, "busybox-static"], cwd=download)
    tree = work / "tree"
    for deb in sorted(download.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(tree)])

    module_roots = sorted((tree / "lib" / "modules").iterdir())
    if len(module_roots) != 1:
        raise GuestKitError(f"expected one kernel in {kernel_pkg}, found {module_roots}")
    release = module_roots[0].name
    # The package ships no modules.dep (its postinst makes it): compute it offline.
    _run(["depmod", "-b", str(tree), release])
    modules = initramfs.module_load_order(module_roots[0], initramfs.WANTED_MODULES)

    busybox = tree / "bin" / "busybox"
    if not busybox.is_file():
        raise GuestKitError("busybox-static did not contain /bin/busybox")
    kernel = tree / "boot" / f"vmlinuz-{release}"
    if not kernel.is_file():
        raise GuestKitError(f"{kernel_pkg} did not contain {kernel.relative_to(tree)}")

    shutil.copyfile(kernel, kit_dir / "vmlinuz")
    image = initramfs.build_initramfs(busybox, modules, key, initramfs.fio_files())
    (kit_dir / "initrd.img").write_bytes(image)
    manifest = {
        "key": key,
        "kernel_package": kernel_pkg,
        "kernel_release": release,
        "modules": [name for name, _ in modules],
        "fio_version": fio_version(),
    }
    (kit_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name in ("vmlinuz", "initrd.img", "manifest.json"):
        with open(kit_dir / name, "rb") as f:
            os.fsync(f.fileno())


if __name__ == "__main__":
    stdlib_logging.basicConfig(level=stdlib_logging.INFO)
    t0 = time.monotonic()
    kit = build_guest_kit()
    print(f"kit:     {kit.directory}")
    print(f"kernel:  {kit.kernel} ({kit.kernel_release})")
    print(f"initrd:  {kit.initrd} ({kit.initrd.stat().st_size // 2**20} MiB)")
    print(f"modules: {' '.join(kit.modules)}")
    print(f"fio:     {kit.fio_version}")
    print(f"took:    {time.monotonic() - t0:.1f} s")
