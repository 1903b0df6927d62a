"""The guest's initramfs: busybox, the virtio modules, fio with its libraries, and /init.

What ``/init`` does is the guest contract of
:mod:`~nova_disk_tuning_bench.guest.console`; this module only packs it:
a cpio "newc" archive the kernel unpacks, built in Python (no cpio tool),
gzip-compressed with mtime 0 so identical inputs give an identical initrd.

fio is the host's own binary (Debian package ``fio``) with every shared
library ``ldd`` resolves for it, each at the path ``ldd`` printed, plus the
dynamic loader at its ``PT_INTERP`` path: the guest runs the same fio the
host-side bound runs. Debian's fio links librbd, glusterfs and friends,
about 80 MiB of libraries in all; the dynamic loader needs every
``DT_NEEDED`` library present even for engines a job never uses.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from nova_disk_tuning_bench.guest.errors import GuestKitError

# Modules for virtio-blk and virtio-scsi disks; their dependencies are resolved from
# modules.dep at build time, so the load order follows the kernel actually shipped.
WANTED_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod")
FIO = "/usr/bin/fio"

INIT_SCRIPT = r"""#!/bin/busybox sh
# Init of the nova-disk-tuning guest: exercise the disks or run fio jobs, report, power off.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
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
bench=""
stay=""
timeout=60
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ndt.disks=*) disks=$(echo "${arg#ndt.disks=}" | tr ',' ' ') ;;
        ndt.sums=*) sums=$(echo "${arg#ndt.sums=}" | tr ',' ' ') ;;
        ndt.bench=*) bench="${arg#ndt.bench=}" ;;
        ndt.timeout=*) timeout="${arg#ndt.timeout=}" ;;
        ndt.stay=1) stay=1 ;;
    esac
    case "$arg" in ndt.*) told=1 ;; esac
done

# No ndt.* parameter at all: a boot whose command line is not ours (Nova's
# rescue of a kernel image uses its own fixed one, whose last console is hvc0).
# Say so on the serial port itself and stay up idle, like a plain server.
if [ -z "${told:-}" ]; then
    echo "NDT-IDLE" > /dev/ttyS0
    while :; do sleep 3600; done
fi

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

# The jobs disk $1 is a tar archive: "target" names the disk under test, "jobs" the
# job names in order, <name>.fio each job file. One result line per job.
run_bench() {
    if ! wait_disk "$1"; then
        echo "NDT-BENCH fail missing $1"
        return
    fi
    mkdir -p /bench
    if ! tar -x -f "/dev/$1" -C /bench 2>/tmp/tar.err; then
        echo "NDT-BENCH fail unpack $(head -c 200 /tmp/tar.err | tr '\n' ' ')"
        return
    fi
    target=$(cat /bench/target)
    if ! wait_disk "$target"; then
        echo "NDT-BENCH fail missing $target"
        return
    fi
    echo "NDT-FIO-VERSION $(fio --version 2>&1 | head -n 1)"
    for job in $(cat /bench/jobs); do
        echo "NDT-FIO-START $job"
        if fio --output-format=terse --terse-version=3 "/bench/$job.fio" \
                >/tmp/fio.out 2>/tmp/fio.err; then
            line=$(grep '^3;' /tmp/fio.out | head -n 1)
            if [ -n "$line" ]; then
                echo "NDT-FIO $job ok $line"
            else
                echo "NDT-FIO $job fail fio printed no result"
            fi
        else
            echo "NDT-FIO $job fail $(tail -c 300 /tmp/fio.err | tr '\n' ' ')"
        fi
    done
    echo "NDT-BENCH done"
}

[ -n "$bench" ] && run_bench "$bench"

echo "NDT-DONE"
sync
# ndt.stay=1: stay up like a real server (a cloud's life cycle stops it), idle.
if [ -n "$stay" ]; then
    while :; do sleep 3600; done
fi
poweroff -f
# poweroff -f does not return; if it did, panic (=> reboot => on_reboot destroy).
exit 1
"""


# --------------------------------------------------------------------------- modules


def module_name(path: str) -> str:
    base = os.path.basename(path.strip())
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    # The kernel treats '-' and '_' in module names alike; normalise to '_'.
    return base.replace("-", "_")


def module_load_order(modules_dir: Path, wanted: Sequence[str]) -> list[tuple[str, Path]]:
    """Resolve ``wanted`` through modules.dep into a dependency-first load order.

    Modules built into the kernel (modules.builtin) need no loading and are dropped.
    """
    builtin = set()
    builtin_file = modules_dir / "modules.builtin"
    if builtin_file.exists():
        builtin = {module_name(line) for line in builtin_file.read_text().splitlines()}
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[module_name(path)] = (path, [module_name(p) for p in rest.split()])

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


def read_module(path: Path) -> bytes:
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


# --------------------------------------------------------------------------- fio

_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+)\s+\(0x[0-9a-f]+\)\s*$")


def parse_ldd(text: str) -> list[str]:
    """The absolute paths of the libraries in ``ldd`` output (the loader included)."""
    paths = []
    for line in text.splitlines():
        if "not found" in line:
            raise GuestKitError(f"ldd {FIO}: {line.strip()}; install the missing library")
        match = _LDD_LINE.match(line)
        if match and match.group(2).startswith("/"):
            paths.append(match.group(2))
    return paths


def fio_files(fio: str = FIO) -> list[tuple[str, Path]]:
    """(path in the guest, file on the host) for fio and every library it loads."""
    if not os.path.isfile(fio):
        raise GuestKitError(f"{fio} is missing: install the Debian package fio")
    try:
        out = subprocess.run(
            ["ldd", fio], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestKitError(f"ldd {fio} failed: {exc}") from exc
    libraries = parse_ldd(out)
    if not any("ld-linux" in path for path in libraries):
        raise GuestKitError(f"ldd {fio} named no dynamic loader: is {fio} a dynamic binary?")
    # The real file under the name ld.so looks for (symlinks resolved on the host).
    return [(fio, Path(fio))] + [(path, Path(os.path.realpath(path))) for path in libraries]


# --------------------------------------------------------------------------- cpio


class Cpio:
    """A writer for the cpio "newc" format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._dirs: set[str] = set()

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
        """``name`` and its missing parents (the kernel creates no parents itself)."""
        parts = name.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            if path not in self._dirs:
                self._dirs.add(path)
                self._entry(path, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.directory(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | perm, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def build_initramfs(
    busybox: Path,
    modules: Iterable[tuple[str, Path]],
    key: str,
    extra_files: Iterable[tuple[str, Path]] = (),
) -> bytes:
    """The gzip-compressed initramfs: /init, busybox, modules and ``extra_files``."""
    modules = list(modules)
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "sys", "tmp", "modules"):
        archive.directory(directory)
    # The kernel opens /dev/console for init before devtmpfs is mounted; without the
    # node, init's output would go nowhere.
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", INIT_SCRIPT.replace("@KIT_KEY@", key).encode(), 0o755)
    for name, path in modules:
        archive.file(f"modules/{name}.ko", read_module(path))
    archive.file("modules/order", "".join(f"{name}\n" for name, _ in modules).encode())
    for guest_path, host_file in extra_files:
        archive.file(guest_path, host_file.read_bytes(), 0o755)
    # mtime=0: identical inputs give an identical initrd.
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)
