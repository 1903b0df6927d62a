"""Storage commands: ``probe``, ``zero`` and ``preallocate``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.cmd import common
from nova_disk_tuning.common import units
from nova_disk_tuning.common.units import GiB
from nova_disk_tuning.images.cache import ImageCache
from nova_disk_tuning.storage import holders, kernel
from nova_disk_tuning.storage.preallocate import preallocate
from nova_disk_tuning.storage.probe import StorageProbe
from nova_disk_tuning.storage.zero import Zeroer

HostFacts = Callable[[cfg.ConfigOpts], list[tuple[str, str]]]


def kernel_facts(conf: cfg.ConfigOpts) -> list[tuple[str, str]]:
    uring = kernel.io_uring_support()
    return [
        ("kernel", kernel.kernel_release()),
        ("io_uring", f"{'usable' if uring.usable else 'unusable'}: {uring.reason}"),
    ]


def qemu_img_facts(conf: cfg.ConfigOpts) -> list[tuple[str, str]]:
    from nova_disk_tuning.images.qemu_img import QemuImg

    qemu_img = QemuImg(conf)
    try:
        version = ".".join(str(part) for part in qemu_img.version())
    except exception.NovaDiskTuningException as exc:
        return [("qemu-img", f"unavailable: {exc}")]
    performance = qemu_img.supports_extended_l2()
    return [
        ("qemu-img", version),
        (
            "preallocated qcow2 overlays",
            "yes (extended_l2)" if performance else "no: performance falls back to space",
        ),
    ]


def libvirt_facts(conf: cfg.ConfigOpts) -> list[tuple[str, str]]:
    from nova_disk_tuning.common.versions import format_version
    from nova_disk_tuning.host import Host

    host = Host(conf, read_only=True)
    try:
        caps = host.caps()
    except exception.NovaDiskTuningException as exc:
        return [("libvirt", f"unreachable: {exc}")]
    finally:
        host.close()
    return [
        ("libvirt connection", host.uri),
        ("libvirt", format_version(caps.libvirt_version)),
        ("QEMU", format_version(caps.qemu_version)),
        ("io_uring for disks", "yes" if caps.io_uring else f"no: {caps.io_uring_missing()}"),
    ]


# What `probe` reports about the host, one provider per layer; each returns
# (name, value) rows.
HOST_FACT_PROVIDERS: tuple[HostFacts, ...] = (kernel_facts, qemu_img_facts, libvirt_facts)


def register(subparsers: argparse._SubParsersAction) -> None:
    probe = subparsers.add_parser(
        "probe",
        help="Show what the host's storage can do (O_DIRECT, fallocate modes, io_uring).",
        description="Probe each PATH (default: [DEFAULT] instances_path) and the host.",
    )
    probe.add_argument("paths", nargs="*", metavar="PATH", help="Directory, file or device.")
    probe.add_argument("--json", action="store_true", help="Print one JSON object.")
    probe.set_defaults(func=probe_command)

    zero = subparsers.add_parser(
        "zero",
        help="Zero a range of a file or block device with the fastest method.",
        description="Zero [offset, offset+length) of PATH (default: all of it).",
    )
    zero.add_argument("path", metavar="PATH")
    zero.add_argument("--offset", default="0", help="Start of the range (e.g. 1G). Default 0.")
    zero.add_argument("--length", default=None, help="Length (e.g. 512M). Default: to the end.")
    zero.add_argument(
        "--sparse", action="store_true", help="Let the range become holes (deallocate)."
    )
    zero.add_argument("--json", action="store_true", help="Print one JSON object.")
    zero.set_defaults(func=zero_command)

    prealloc = subparsers.add_parser(
        "preallocate",
        help="Allocate a disk file's space up front (preallocate_images=space).",
        description="Allocate SIZE bytes of PATH with fallocate, creating it if missing.",
    )
    prealloc.add_argument("path", metavar="PATH")
    prealloc.add_argument("--size", required=True, help="Bytes to allocate (e.g. 10G).")
    prealloc.add_argument(
        "--keep-size",
        action="store_true",
        help="Allocate past EOF without changing the apparent size (qcow2 overlays).",
    )
    prealloc.add_argument("--json", action="store_true", help="Print one JSON object.")
    prealloc.set_defaults(func=preallocate_command)


def probe_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    paths = args.paths or [conf.instances_path]
    for path in paths:
        if not os.path.exists(path):
            hint = (
                "pass an existing PATH"
                if args.paths
                else "it is [DEFAULT] instances_path: create it, fix nova.conf or pass a PATH"
            )
            raise exception.StorageError(
                operation="probe", path=path, reason=f"it does not exist; {hint}"
            )
    probe = StorageProbe()
    reports = [_probe_path(probe, path) for path in paths]
    facts = [row for provider in HOST_FACT_PROVIDERS for row in provider(conf)]
    if args.json:
        common.print_json({"host": dict(facts), "paths": reports})
        return 0
    rows = []
    for r in reports:
        alloc = r["allocation"]
        rows.append(
            (
                r["path"],
                r["fs_type"],
                _yes(r["direct_io"]),
                ", ".join(r["fallocate_modes"]) or "none",
                units.human_size(alloc["size"]) if alloc else "-",
                units.human_size(alloc["allocated"]) if alloc else "-",
                _yes(alloc["fully_allocated"]) if alloc else "-",
            )
        )
    columns = ("path", "type", "O_DIRECT", "fallocate", "size", "allocated", "fully allocated")
    common.print_table("Storage", columns, rows)
    common.print_table("Host", ("fact", "value"), facts)
    return 0


def _probe_path(probe: StorageProbe, path: str) -> dict:
    allocation = None
    if not os.path.isdir(path):
        a = probe.allocation(path)
        allocation = {
            "size": a.size,
            "allocated": a.allocated,
            "fully_allocated": a.fully_allocated,
        }
    return {
        "path": path,
        "fs_type": probe.fs_type(path),
        "block_device": probe.is_block_device(path),
        "direct_io": probe.supports_direct_io(path),
        "fallocate_modes": sorted(probe.fallocate_modes(path)),
        "allocation": allocation,
    }


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def zero_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    offset = units.parse_size(args.offset, "--offset")
    length = None if args.length is None else units.parse_size(args.length, "--length")
    # Opened once: what holds it is checked on that descriptor, then written.
    fd = holders.open_for_writing(args.path, "zero")
    try:
        held = ImageCache(conf).holders(os.fstat(fd))
        if held:
            raise exception.StorageError(
                operation="zero",
                path=args.path,
                reason=f"it is in use: {held}. Nothing was written",
            )
        result = Zeroer().zero_fd(fd, offset, length, sparse=args.sparse, path=args.path)
    finally:
        os.close(fd)
    if args.json:
        common.print_json(
            {
                "path": args.path,
                "offset": offset,
                "sparse": args.sparse,
                "method": result.method,
                "bytes": result.bytes,
                "seconds": result.seconds,
            }
        )
        return 0
    rate = result.bytes / result.seconds / GiB if result.seconds else 0.0
    print(
        f"Zeroed {result.bytes} bytes of {args.path} at offset {offset} with "
        f"{result.method} in {result.seconds:.6f} s ({rate:.1f} GiB/s)"
    )
    return 0


def preallocate_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    size = units.parse_size(args.size, "--size")
    result = preallocate(args.path, size, keep_size=args.keep_size)
    if args.json:
        common.print_json(
            {
                "path": args.path,
                "size": size,
                "keep_size": args.keep_size,
                "allocated": result.allocated,
                "method": result.method,
                "reason": result.reason,
            }
        )
        return 0
    state = "allocated" if result.allocated else "NOT allocated"
    print(f"{args.path}: {state} ({result.method}): {result.reason}")
    return 0
