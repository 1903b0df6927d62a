"""Helpers around a running guest: QEMU's command line and image contents.

- :func:`qemu_cmdline` reads the argv of the QEMU process that runs a domain;
  :func:`qemu_cmdline_from_log` recovers it from the domain's QEMU log after the guest
  has gone (libvirt writes the command line there before it starts QEMU).
- :func:`blockdev_nodes`, :func:`device_args` and :func:`disk_by_source` parse the
  ``-blockdev`` / ``-device`` JSON arguments into what the tests check: per node name
  the ``aio`` mode and ``cache.direct``, per disk the IOThread it is bound to
  (what the e2e tests check, and what the bench records of each run).
- :func:`read_image` reads bytes back from a raw/qcow2 image or a block device with
  ``qemu-img dd`` (or ``qemu-io`` for unaligned ranges).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from nova_disk_tuning_bench.guest.errors import GuestRunError

# --------------------------------------------------------------------------- argv


def _cmdline_of(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        raw = f.read()
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def _is_domain(obj: Any) -> bool:
    return hasattr(obj, "UUIDString") and hasattr(obj, "XMLDesc")


def qemu_cmdline(conn_or_domain: Any) -> list[str]:
    """The argv of the QEMU process running a domain.

    Takes a ``virDomain``, or a ``virConnect`` with exactly one running domain. The
    process is found by the ``-uuid`` libvirt passes to QEMU, which is unique even when
    several private daemons run domains of the same name.
    """
    if _is_domain(conn_or_domain):
        domain = conn_or_domain
    else:
        running = conn_or_domain.listAllDomains(1)  # VIR_CONNECT_LIST_DOMAINS_ACTIVE
        if len(running) != 1:
            raise GuestRunError(
                f"qemu_cmdline(conn) needs exactly one running domain, found "
                f"{[d.name() for d in running]}"
            )
        domain = running[0]
    uuid = domain.UUIDString()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = _cmdline_of(int(entry))
        except OSError:
            continue
        if not argv or "qemu-system" not in os.path.basename(argv[0]):
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg == "-uuid" and argv[i + 1].lower() == uuid.lower():
                return argv
    raise GuestRunError(f"no QEMU process runs domain {domain.name()} (uuid {uuid})")


def qemu_cmdline_from_log(log_path: str | os.PathLike[str]) -> list[str]:
    """QEMU's argv from the last start recorded in a libvirt QEMU domain log.

    libvirt logs ``LC_ALL=C ... /usr/bin/qemu-system-x86_64 \\`` with one argument per
    continuation line; environment assignments before the binary are dropped.
    """
    text = Path(log_path).read_text(errors="replace")
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.search(r"\S*qemu-system-\S+ \\$", line)]
    if not starts:
        raise GuestRunError(f"{log_path} records no QEMU command line")
    start = starts[-1]
    chunk = []
    for line in lines[start:]:
        chunk.append(line[:-1] if line.endswith("\\") else line)
        if not line.endswith("\\"):
            break
    tokens = shlex.split(" ".join(chunk))
    while tokens and "qemu-system" not in os.path.basename(tokens[0]):
        tokens.pop(0)
    return tokens


@dataclasses.dataclass(frozen=True)
class BlockNode:
    """One ``-blockdev`` node as QEMU received it."""

    node_name: str
    driver: str
    filename: str | None
    aio: str | None
    cache_direct: bool | None
    cache_no_flush: bool | None
    child: str | None  # the "file" node below a format node
    raw: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class DeviceArg:
    """One ``-device`` argument (JSON or key=value form)."""

    driver: str
    id: str | None
    drive: str | None
    iothread: str | None
    raw: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class DiskArgs:
    """What QEMU got for one disk: its storage node, format node and device."""

    storage: BlockNode
    format: BlockNode | None
    device: DeviceArg | None

    @property
    def aio(self) -> str | None:
        return self.storage.aio

    @property
    def cache_direct(self) -> bool | None:
        return self.storage.cache_direct

    @property
    def iothread(self) -> str | None:
        return self.device.iothread if self.device else None


def _option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]


def _parse_keyvals(value: str) -> dict[str, Any]:
    # The legacy "driver,key=value,..." form; ",," escapes a comma.
    parts = re.split(r"(?<!,),(?!,)", value)
    out: dict[str, Any] = {}
    for i, part in enumerate(parts):
        part = part.replace(",,", ",")
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
        elif i == 0:
            out["driver"] = part
    return out


def _parse_arg(value: str) -> dict[str, Any]:
    if value.startswith("{"):
        parsed: dict[str, Any] = json.loads(value)
        return parsed
    return _parse_keyvals(value)


def _flatten_cache(node: dict[str, Any]) -> tuple[bool | None, bool | None]:
    cache = node.get("cache")
    if isinstance(cache, dict):
        return cache.get("direct"), cache.get("no-flush")
    direct = node.get("cache.direct")
    no_flush = node.get("cache.no-flush")

    def as_bool(v: Any) -> bool | None:
        return None if v is None else str(v).lower() in ("on", "true", "yes")

    return as_bool(direct), as_bool(no_flush)


def blockdev_nodes(argv: list[str]) -> dict[str, BlockNode]:
    """Every ``-blockdev`` node by node name."""
    nodes = {}
    for value in _option_values(argv, "-blockdev"):
        raw = _parse_arg(value)
        direct, no_flush = _flatten_cache(raw)
        child = raw.get("file")
        name = raw["node-name"]
        nodes[name] = BlockNode(
            node_name=name,
            driver=raw.get("driver", ""),
            filename=raw.get("filename") or raw.get("dev"),
            aio=raw.get("aio"),
            cache_direct=direct,
            cache_no_flush=no_flush,
            child=child if isinstance(child, str) else None,
            raw=raw,
        )
    return nodes


def device_args(argv: list[str]) -> list[DeviceArg]:
    """Every ``-device`` argument, in order."""
    devices = []
    for value in _option_values(argv, "-device"):
        raw = _parse_arg(value)
        devices.append(
            DeviceArg(
                driver=raw.get("driver", ""),
                id=raw.get("id"),
                drive=raw.get("drive"),
                iothread=raw.get("iothread"),
                raw=raw,
            )
        )
    return devices


def iothread_ids(argv: list[str]) -> list[str]:
    """The ids of the ``-object iothread`` objects QEMU was given."""
    ids = []
    for value in _option_values(argv, "-object"):
        raw = _parse_arg(value)
        if raw.get("qom-type") == "iothread" or raw.get("driver") == "iothread":
            ids.append(raw["id"])
    return ids


def disk_by_source(argv: list[str], source: str | os.PathLike[str]) -> DiskArgs:
    """The storage node, format node and device for the disk whose file/device is ``source``.

    Matches the protocol node whose ``filename`` is ``source``, then the format node
    whose ``file`` is that node, then the device whose ``drive`` is the format node (or,
    for a disk without a format layer, the storage node itself).
    """
    source = os.fspath(source)
    nodes = blockdev_nodes(argv)
    storage = [n for n in nodes.values() if n.filename == source]
    if len(storage) != 1:
        raise GuestRunError(
            f"expected one -blockdev for {source}, found {len(storage)}: "
            f"{[n.raw for n in nodes.values()]}"
        )
    store = storage[0]
    fmt = next((n for n in nodes.values() if n.child == store.node_name), None)
    top = fmt.node_name if fmt else store.node_name
    device = next((d for d in device_args(argv) if d.drive == top), None)
    return DiskArgs(storage=store, format=fmt, device=device)


# --------------------------------------------------------------------------- data


def read_image(path: str | os.PathLike[str], fmt: str, offset: int, length: int) -> bytes:
    """``length`` bytes at guest-visible ``offset`` of an image or block device.

    ``fmt`` is the image format (``raw``, ``qcow2``, ...): the bytes are those the guest
    sees, read through QEMU's block layer, not the file's bytes on the host.
    """
    block = math.gcd(offset, length)
    if block >= 512:
        block = min(block, 4 * 1024 * 1024)
        while offset % block or length % block:
            block //= 2
        return _read_with_dd(os.fspath(path), fmt, offset, length, block)
    return _read_with_qemu_io(os.fspath(path), fmt, offset, length)


def _read_with_dd(path: str, fmt: str, offset: int, length: int, block: int) -> bytes:
    skip = offset // block
    # qemu-img dd (7.2) counts `count` from the start of the input, skipped blocks
    # included, so ask for skip + n blocks. Should a later QEMU count after the skip
    # instead, the extra bytes are cut off below, and the length check still holds.
    count = skip + length // block
    with tempfile.TemporaryDirectory(prefix="ndt-read-") as tmp:
        out = os.path.join(tmp, "out.raw")
        proc = subprocess.run(
            ["qemu-img", "dd", "-f", fmt, "-O", "raw", f"bs={block}",
             f"skip={skip}", f"count={count}", f"if={path}",
             f"of={out}"],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0:
            raise GuestRunError(f"qemu-img dd of {path} failed: {proc.stderr.strip()}")
        with open(out, "rb") as f:
            data = f.read(length)
    if len(data) != length:
        raise GuestRunError(f"qemu-img dd returned {len(data)} bytes of {length} from {path}")
    return data


_HEXDUMP = re.compile(r"^[0-9a-f]{8}:\s+((?:[0-9a-f]{2}\s)+)", re.MULTILINE)


def _read_with_qemu_io(path: str, fmt: str, offset: int, length: int) -> bytes:
    proc = subprocess.run(
        ["qemu-io", "-r", "-f", fmt, "-c", f"read -v {offset} {length}", path],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0 or "read failed" in proc.stdout:
        raise GuestRunError(f"qemu-io read of {path} failed: {proc.stdout}{proc.stderr}")
    data = bytearray()
    for m in _HEXDUMP.finditer(proc.stdout):
        data.extend(bytes.fromhex(m.group(1).replace(" ", "")))
    if len(data) != length:
        raise GuestRunError(f"qemu-io returned {len(data)} bytes of {length} from {path}")
    return bytes(data)
