"""A tiny test guest: Debian's kernel plus a busybox initramfs that exercises its disks.

The kit is built from two Debian packages (``linux-image-<abi>-amd64`` and
``busybox-static``) fetched with ``apt-get download``, so it needs nothing but the
Debian archive. It is cached under ``/var/cache/nova-disk-tuning-tests/guest/<key>``
(override the root with ``NDT_GUEST_CACHE``), where the key names the kernel and
busybox package versions and a hash of this builder. A build happens in a temporary
directory beside the cache entry and is renamed into place, so an interrupted build
never leaves a half kit; concurrent builds serialise on a lock file.

Guest contract (what a domain booted from the kit does)
-------------------------------------------------------
Boot it with direct kernel boot: ``<kernel>`` = ``kit.kernel``, ``<initrd>`` =
``kit.initrd``, ``<cmdline>`` = :func:`guest_cmdline` (``console=ttyS0`` and the
``ndt.*`` parameters below), a serial port on ``ttyS0`` that writes to a file, and
virtio-blk (``vdX``) and/or virtio-scsi (``sdX``) disks.

Kernel command line parameters:

``ndt.disks=vda,vdb``
    For each disk: wait until ``/sys/block/<disk>`` exists, print its size, write
    :func:`expected_pattern` (the ASCII text ``NDT-PATTERN-<disk>-`` repeated to
    fill 1 MiB) at offset 1 MiB with ``O_DIRECT`` and ``fsync``, drop the page cache,
    read the range back with ``O_DIRECT`` and compare. Disks need at least 2 MiB.
``ndt.sums=vda:0:1,vdb:4:2``
    Before any write, print the MD5 of ``<length MiB>`` read at ``<offset MiB>``
    (``O_DIRECT``), so a test can check what the guest sees of a base image.
``ndt.timeout=60``
    Seconds to wait for each disk to appear (default 60).

Serial console lines (one per line, nothing else starts with ``NDT-``)::

    NDT-BOOT <kit key>
    NDT-MODULE <name> failed          (only on failure)
    NDT-SIZE <disk> <bytes>
    NDT-SUM <disk> <offset MiB> <length MiB> <md5 hex>
    NDT-RESULT <disk> ok
    NDT-RESULT <disk> fail <missing|too-small|write|read|compare>
    NDT-DONE

After ``NDT-DONE`` the guest runs ``sync`` and ``poweroff -f``: the domain shuts off
by itself. If ``/init`` ever dies the kernel panics and, with ``panic=-1`` on the
command line, reboots; give the domain ``<on_reboot>destroy</on_reboot>`` so that
ends the domain too. :func:`parse_console` turns the log into a :class:`GuestReport`.

Run this file directly (``python tests/e2e/guest.py``) to build or find the kit
and print its paths.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

LOG = logging.getLogger(__name__)

DEFAULT_CACHE_ROOT = Path("/var/cache/nova-disk-tuning-tests/guest")
PATTERN_OFFSET = 1024 * 1024
PATTERN_LENGTH = 1024 * 1024

# Modules for virtio-blk and virtio-scsi disks; their dependencies are resolved from
# modules.dep at build time, so the load order follows the kernel actually shipped.
WANTED_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod")

# Bump when the initramfs layout changes in a way the init script hash does not show.
BUILDER_VERSION = "1"

INIT_SCRIPT = r"""#!/bin/busybox sh
# Init for the nova-disk-tuning e2e guest: exercise the disks, report, power off.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "NDT-BOOT @KIT_KEY@"

while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/modules/$mod.ko" 2>/dev/null || echo "NDT-MODULE $mod failed"
done < /modules/order

disks=""
sums=""
timeout=60
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ndt.disks=*) disks=$(echo "${arg#ndt.disks=}" | tr ',' ' ') ;;
        ndt.sums=*) sums=$(echo "${arg#ndt.sums=}" | tr ',' ' ') ;;
        ndt.timeout=*) timeout="${arg#ndt.timeout=}" ;;
    esac
done

MIB=1048576

# Wait for /sys/block/$1 and its device node; devtmpfs creates the node.
wait_disk() {
    n=0
    while [ ! -e "/sys/block/$1" ] || [ ! -b "/dev/$1" ]; do
        n=$((n + 1))
        [ "$n" -gt $((timeout * 10)) ] && return 1
        usleep 100000
    done
    return 0
}

for spec in $sums; do
    d="${spec%%:*}"; rest="${spec#*:}"; off="${rest%%:*}"; len="${rest#*:}"
    if wait_disk "$d"; then
        sum=$(dd if="/dev/$d" bs=$MIB skip="$off" count="$len" iflag=direct 2>/dev/null \
              | md5sum | cut -d' ' -f1)
        echo "NDT-SUM $d $off $len $sum"
    else
        echo "NDT-SUM $d $off $len missing"
    fi
done

for d in $disks; do
    if ! wait_disk "$d"; then
        echo "NDT-RESULT $d fail missing"
        continue
    fi
    sectors=$(cat "/sys/block/$d/size")
    bytes=$((sectors * 512))
    echo "NDT-SIZE $d $bytes"
    if [ "$bytes" -lt $((2 * MIB)) ]; then
        echo "NDT-RESULT $d fail too-small"
        continue
    fi
    yes "NDT-PATTERN-$d-" | tr -d '\n' | head -c $MIB > "/tmp/pattern.$d"
    if ! dd if="/tmp/pattern.$d" of="/dev/$d" bs=$MIB seek=1 count=1 \
            oflag=direct conv=notrunc,fsync 2>/dev/null; then
        echo "NDT-RESULT $d fail write"
        continue
    fi
    sync
    echo 3 > /proc/sys/vm/drop_caches
    if ! dd if="/dev/$d" of="/tmp/readback.$d" bs=$MIB skip=1 count=1 \
            iflag=direct 2>/dev/null; then
        echo "NDT-RESULT $d fail read"
        continue
    fi
    if cmp -s "/tmp/pattern.$d" "/tmp/readback.$d"; then
        echo "NDT-RESULT $d ok"
    else
        echo "NDT-RESULT $d fail compare"
    fi
    rm -f "/tmp/pattern.$d" "/tmp/readback.$d"
done

echo "NDT-DONE"
sync
poweroff -f
# poweroff -f does not return; if it did, panic (=> reboot => on_reboot destroy).
exit 1
"""


class GuestKitError(RuntimeError):
    """The guest kit could not be built; the message says which step and why."""


@dataclasses.dataclass(frozen=True)
class GuestKit:
    """A built guest: pass ``kernel`` and ``initrd`` to ``<os>`` for direct boot."""

    key: str
    directory: Path
    kernel: Path
    initrd: Path
    kernel_release: str
    modules: tuple[str, ...]


@dataclasses.dataclass
class GuestReport:
    """What the guest printed on its serial console."""

    booted: bool = False
    done: bool = False
    results: dict[str, str] = dataclasses.field(default_factory=dict)
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    sums: dict[tuple[str, int, int], str] = dataclasses.field(default_factory=dict)
    failed_modules: list[str] = dataclasses.field(default_factory=list)


def expected_pattern(disk: str, length: int = PATTERN_LENGTH) -> bytes:
    """The bytes the guest writes to ``disk`` (e.g. ``"vda"``) at PATTERN_OFFSET."""
    unit = f"NDT-PATTERN-{disk}-".encode("ascii")
    return (unit * (length // len(unit) + 1))[:length]


def guest_cmdline(
    disks: Iterable[str] = (),
    sums: Iterable[tuple[str, int, int]] = (),
    timeout: int = 60,
    extra: str = "",
) -> str:
    """The kernel command line for a guest that writes to ``disks``.

    ``sums`` holds ``(disk, offset_mib, length_mib)`` ranges to checksum before writes.
    ``panic=-1`` turns a dead init into a reboot, which ``on_reboot=destroy`` ends.
    """
    parts = ["console=ttyS0", "panic=-1", "loglevel=4"]
    disks = list(disks)
    if disks:
        parts.append("ndt.disks=" + ",".join(disks))
    sum_specs = [f"{d}:{o}:{n}" for d, o, n in sums]
    if sum_specs:
        parts.append("ndt.sums=" + ",".join(sum_specs))
    parts.append(f"ndt.timeout={int(timeout)}")
    if extra:
        parts.append(extra)
    return " ".join(parts)


def parse_console(text: str) -> GuestReport:
    """Parse the serial console log of a guest booted from the kit."""
    report = GuestReport()
    for raw in text.splitlines():
        line = raw.strip()
        # Kernel messages can share a line with ours on a busy console: find the tag.
        idx = line.find("NDT-")
        if idx < 0:
            continue
        words = line[idx:].split()
        tag = words[0]
        if tag == "NDT-BOOT":
            report.booted = True
        elif tag == "NDT-DONE":
            report.done = True
        elif tag == "NDT-RESULT" and len(words) >= 3:
            report.results[words[1]] = " ".join(words[2:])
        elif tag == "NDT-SIZE" and len(words) == 3:
            report.sizes[words[1]] = int(words[2])
        elif tag == "NDT-SUM" and len(words) == 5:
            report.sums[(words[1], int(words[2]), int(words[3]))] = words[4]
        elif tag == "NDT-MODULE" and len(words) >= 2:
            report.failed_modules.append(words[1])
    return report


# --------------------------------------------------------------------------- build


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, check=False, timeout=900
        )
    except FileNotFoundError as exc:
        raise GuestKitError(
            f"{argv[0]} is not installed; it is needed to build the e2e guest (see bindep.txt)"
        ) from exc
    if proc.returncode != 0:
        raise GuestKitError(
            f"{' '.join(argv)} failed with exit code {proc.returncode}:\n"
            f"{proc.stderr.strip()[-2000:]}"
        )
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


def _builder_hash() -> str:
    h = hashlib.sha256()
    h.update(BUILDER_VERSION.encode())
    h.update(INIT_SCRIPT.encode())
    h.update(",".join(WANTED_MODULES).encode())
    return h.hexdigest()[:12]


def _kit_key(kernel_pkg: str, kernel_ver: str, busybox_ver: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9.+-]", "_", f"{kernel_pkg}_{kernel_ver}_bb{busybox_ver}")
    return f"{safe}_{_builder_hash()}"


def _module_load_order(modules_dir: Path, wanted: Sequence[str]) -> list[tuple[str, Path]]:
    """Resolve ``wanted`` through modules.dep into a dependency-first load order.

    Modules built into the kernel (modules.builtin) need no loading and are dropped.
    """
    builtin = set()
    builtin_file = modules_dir / "modules.builtin"
    if builtin_file.exists():
        for line in builtin_file.read_text().splitlines():
            builtin.add(_module_name(line))
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[_module_name(path)] = (path, [_module_name(p) for p in rest.split()])

    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in deps:
            raise GuestKitError(f"kernel module {name} is neither in modules.dep nor built in")
        path, requires = deps[name]
        for dep in requires:
            visit(dep)
        order.append((name, modules_dir / path))

    for name in wanted:
        visit(name.replace("-", "_"))
    return order


def _module_name(path: str) -> str:
    base = os.path.basename(path.strip())
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    # The kernel treats '-' and '_' in module names alike; normalise to '_'.
    return base.replace("-", "_")


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    # busybox insmod loads plain ELF only; Debian 12 ships uncompressed modules, but a
    # later kernel may not.
    if path.name.endswith(".xz"):
        import lzma

        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise GuestKitError(f"{path} is zstd-compressed; the builder cannot unpack it")
    return data


class _Cpio:
    """A writer for the cpio "newc" format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = [
            self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
            0, 0, rdev[0], rdev[1], len(encoded), 0,
        ]  # fmt: skip
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._buf.write(header + encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def _build_initramfs(busybox: Path, modules: list[tuple[str, Path]], key: str) -> bytes:
    archive = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "modules"):
        archive.directory(d)
    # The kernel opens /dev/console for init before devtmpfs is mounted; without the
    # node, init's output would go nowhere.
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", INIT_SCRIPT.replace("@KIT_KEY@", key).encode(), 0o755)
    for name, path in modules:
        archive.file(f"modules/{name}.ko", _read_module(path))
    archive.file("modules/order", "".join(f"{name}\n" for name, _ in modules).encode())
    # mtime=0: identical inputs give an identical initrd.
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)


def _load_kit(directory: Path) -> GuestKit:
    manifest = json.loads((directory / "manifest.json").read_text())
    return GuestKit(
        key=manifest["key"],
        directory=directory,
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        kernel_release=manifest["kernel_release"],
        modules=tuple(manifest["modules"]),
    )


def _complete(directory: Path) -> bool:
    return all((directory / n).is_file() for n in ("manifest.json", "vmlinuz", "initrd.img"))


def cache_root() -> Path:
    return Path(os.environ.get("NDT_GUEST_CACHE", str(DEFAULT_CACHE_ROOT)))


def build_guest_kit(root: Path | None = None) -> GuestKit:
    """Return the cached kit for Debian's current kernel, building it if needed."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    kernel_pkg = _kernel_package()
    key = _kit_key(kernel_pkg, _package_version(kernel_pkg), _package_version("busybox-static"))
    final = root / key
    if _complete(final):
        return _load_kit(final)

    # Serialise builders (parallel test sessions); the winner's kit serves everyone.
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
        LOG.info("built e2e guest kit %s in %.1f s", final, time.monotonic() - started)
        _prune_other_kits(root, keep=final)
        return _load_kit(final)


def _prune_other_kits(root: Path, keep: Path) -> None:
    # Kits for kernels Debian no longer points at are never used again (the key names
    # the current one), and a .build-* dir is what a killed build left behind: nobody
    # else builds while we hold the lock. Drop both so the cache does not grow.
    for entry in root.iterdir():
        if entry == keep or not entry.is_dir():
            continue
        if entry.name.startswith(".build-") or (
            not entry.name.startswith(".") and _complete(entry)
        ):
            LOG.info("removing stale e2e guest kit entry %s", entry)
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
    modules = _module_load_order(module_roots[0], WANTED_MODULES)

    busybox = tree / "bin" / "busybox"
    if not busybox.is_file():
        raise GuestKitError("busybox-static did not contain /bin/busybox")
    kernel = tree / "boot" / f"vmlinuz-{release}"
    if not kernel.is_file():
        raise GuestKitError(f"{kernel_pkg} did not contain {kernel.relative_to(tree)}")

    shutil.copyfile(kernel, kit_dir / "vmlinuz")
    (kit_dir / "initrd.img").write_bytes(_build_initramfs(busybox, modules, key))
    manifest = {
        "key": key,
        "kernel_package": kernel_pkg,
        "kernel_release": release,
        "modules": [name for name, _ in modules],
    }
    (kit_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name in ("vmlinuz", "initrd.img", "manifest.json"):
        with open(kit_dir / name, "rb") as f:
            os.fsync(f.fileno())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    t0 = time.monotonic()
    kit = build_guest_kit()
    print(f"kit:     {kit.directory}")
    print(f"kernel:  {kit.kernel} ({kit.kernel_release})")
    print(f"initrd:  {kit.initrd}")
    print(f"modules: {' '.join(kit.modules)}")
    print(f"took:    {time.monotonic() - t0:.1f} s")
