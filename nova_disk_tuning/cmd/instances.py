"""``spawn``, ``destroy``, ``list``, ``show``, ``power-on``, ``power-off``: the compute agent.

These commands drive the compute driver registered as ``libvirt`` in the
``nova_disk_tuning.compute_drivers`` entry-point group against ``[libvirt]
connection_uri``. Instances live in ``[DEFAULT] instances_path/<uuid>/``;
with libvirt's test driver (``test:///default``), which forgets its domains
when the process exits, every command defines the known instances again
from their ``libvirt.xml`` first, so the CLI behaves as if libvirt kept them
(a re-defined domain is shut off).

The image cache key (``--image-id``) defaults to a hash of the image's real
path, size and modification time: spawning the same unchanged file twice
reuses one cached base; a changed file is a new image.

``explain NAME`` (in :mod:`nova_disk_tuning.cmd.explain`) prints the tuning
an instance got at spawn, via :func:`explain_instance`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.agent.instance import Flavor, ImageMeta, Instance, image_id_for_path
from nova_disk_tuning.cmd import common
from nova_disk_tuning.common import textfile, units


def register(subparsers: argparse._SubParsersAction) -> None:
    spawn = subparsers.add_parser(
        "spawn",
        help="Create an instance: disks from an image, tuned guest XML, defined in libvirt.",
        description="Fetch the image into the base-image cache (converted once per host), "
        "create the root, ephemeral and swap disks with the configured image backend, "
        "attach volumes, decide each disk's cache/io/discard/IOThread settings, define the "
        "domain (validated against libvirt's schema) and optionally start it.",
    )
    spawn.add_argument("name", metavar="NAME", help="Instance (domain) name.")
    spawn.add_argument("--image", required=True, metavar="PATH", help="Image file to boot from.")
    spawn.add_argument(
        "--image-format",
        metavar="FORMAT",
        help="Declared image format (raw, qcow2, ...); detected when omitted. A mismatch "
        "with what the file really is is refused.",
    )
    spawn.add_argument(
        "--image-id",
        metavar="ID",
        help="Key of the base-image cache (default: a hash of the image's real path, size "
        "and mtime, so an unchanged file is converted once).",
    )
    spawn.add_argument("--vcpus", type=int, default=1, metavar="N")
    spawn.add_argument("--memory-mb", type=int, default=512, metavar="N")
    spawn.add_argument(
        "--root-gb", type=int, default=0, metavar="N", help="Root disk size (0: the image's)."
    )
    spawn.add_argument("--ephemeral-gb", type=int, default=0, metavar="N")
    spawn.add_argument("--swap-mb", type=int, default=0, metavar="N")
    spawn.add_argument(
        "--disk-bus",
        choices=("virtio", "scsi", "sata"),
        default="virtio",
        help="Bus of the root, ephemeral and swap disks (image property hw_disk_bus); "
        "scsi adds a virtio-scsi controller.",
    )
    spawn.add_argument(
        "--volume",
        action="append",
        default=[],
        metavar="CONNECTION_INFO.json",
        help="Cinder connection_info of a connected volume (repeatable); the file may also "
        "hold a block device mapping with connection_info, mount_device and disk_bus.",
    )
    spawn.add_argument(
        "--extra-spec",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Flavor extra spec, e.g. hw:disk_iothreads=2 (repeatable).",
    )
    spawn.add_argument("--kernel", metavar="PATH", help="Kernel for direct kernel boot.")
    spawn.add_argument("--ramdisk", metavar="PATH", help="Initramfs for direct kernel boot.")
    spawn.add_argument("--cmdline", metavar="STR", help="Kernel command line.")
    spawn.add_argument("--uuid", help="Instance UUID (default: a new one).")
    spawn.add_argument("--start", action="store_true", help="Start the guest once defined.")
    spawn.add_argument("--json", action="store_true", help="Print the instance record as JSON.")
    spawn.set_defaults(func=spawn_command)

    destroy = subparsers.add_parser(
        "destroy",
        help="Stop and undefine an instance, remove its disks and directory.",
        description="Stop and undefine the domain, remove the disks through the backend that "
        "made them (LVM volumes are wiped per [libvirt] volume_clear) and the instance "
        "directory. Volumes are detached, never deleted; the image cache is untouched.",
    )
    destroy.add_argument("name", metavar="NAME")
    destroy.add_argument(
        "--keep-disks", action="store_true", help="Undefine only; keep the instance directory."
    )
    destroy.set_defaults(func=destroy_command)

    listing = subparsers.add_parser("list", help="List the instances and their power state.")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=list_command)

    show = subparsers.add_parser(
        "show", help="Print an instance's domain XML (or its record with --json)."
    )
    show.add_argument("name", metavar="NAME")
    show.add_argument(
        "--json", action="store_true", help="The instance record and disk info as JSON."
    )
    show.set_defaults(func=show_command)

    for command, func, text in (
        ("power-on", power_on_command, "Start an instance."),
        ("power-off", power_off_command, "Stop an instance (clean shutdown with --timeout)."),
    ):
        parser = subparsers.add_parser(command, help=text)
        parser.add_argument("name", metavar="NAME")
        if command == "power-off":
            parser.add_argument(
                "--timeout",
                type=float,
                default=0.0,
                metavar="SECONDS",
                help="Wait this long for a clean shutdown before pulling the plug.",
            )
        parser.set_defaults(func=func)


def spawn_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    if (args.ramdisk or args.cmdline) and not args.kernel:
        raise exception.InvalidConfig(reason="--ramdisk and --cmdline need --kernel")
    for option, path in (("--kernel", args.kernel), ("--ramdisk", args.ramdisk)):
        if path is not None and not os.path.isfile(path):
            raise exception.InvalidConfig(
                reason=f"{option} {path} is not a file; give the kernel or initrd file"
            )
    image = ImageMeta(
        id=args.image_id or image_id_for_path(args.image),
        source=args.image,
        disk_format=args.image_format,
        kernel=args.kernel,
        ramdisk=args.ramdisk,
        cmdline=args.cmdline,
        properties={"hw_disk_bus": args.disk_bus},
    )
    flavor = Flavor(
        vcpus=args.vcpus,
        memory_mb=args.memory_mb,
        root_gb=args.root_gb,
        ephemeral_gb=args.ephemeral_gb,
        swap_mb=args.swap_mb,
        extra_specs=common.parse_extra_specs(args.extra_spec),
    )
    instance = Instance(args.name, args.uuid) if args.uuid else Instance(args.name)
    block_device_info = block_device_info_from_files(args.volume) if args.volume else None
    driver = common.compute_driver(conf)
    with common.progress(f"image {image.id[:17]}: fetch/convert", enabled=not args.json) as update:
        result = driver.spawn(
            instance, image, flavor, block_device_info, start=args.start, progress=update
        )
    if args.json:
        common.print_json(result.record.to_dict())
        return 0
    cache = "reused from the cache" if not result.image.created else "fetched and converted"
    print(
        f"Instance {instance.name} ({instance.uuid}) defined at {driver.host.uri}"
        f"{' and started' if args.start else ''} in {result.seconds:.2f} s"
    )
    print(f"Base image {image.id}: {cache} ({result.image.path}, {result.image.format})")
    _print_disks(driver.get_instance_disk_info(instance.name))
    return 0


def _print_disks(info: list[dict[str, Any]]) -> None:
    rows = [
        (
            d["target"],
            d["kind"],
            d["type"],
            d["path"],
            units.human_size(d["virt_disk_size"]) if d["virt_disk_size"] else "-",
            units.human_size(d["disk_size"]) if d["disk_size"] is not None else "-",
            d["cache"] or "-",
            d["io"] or "-",
        )
        for d in info
    ]
    common.print_table(
        None, ("disk", "kind", "format", "path", "size", "allocated", "cache", "io"), rows
    )


def destroy_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    common.compute_driver(conf).destroy(args.name, destroy_disks=not args.keep_disks)
    print(f"Instance {args.name} destroyed")
    return 0


def list_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    rows = common.compute_driver(conf).instances()
    if args.json:
        common.print_json(rows)
        return 0
    if not rows:
        print("No instances.")
        return 0
    common.print_table(
        None,
        ("name", "uuid", "state", "vcpus", "memory MiB", "disks", "image"),
        [
            (
                r["name"],
                r["uuid"],
                r["state"],
                "-" if r["vcpus"] is None else r["vcpus"],
                "-" if r["memory_mb"] is None else r["memory_mb"],
                ",".join(filter(None, r["disks"])) or "-",
                r["image"] or "-",
            )
            for r in rows
        ],
    )
    return 0


def show_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    driver = common.compute_driver(conf)
    if args.json:
        record = driver.get_record(args.name)
        common.print_json(
            {**record.to_dict(), "disk_info": driver.get_instance_disk_info(args.name)}
        )
        return 0
    sys.stdout.write(driver.get_xml(args.name))
    return 0


def power_on_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    common.compute_driver(conf).power_on(args.name)
    print(f"Instance {args.name} started")
    return 0


def power_off_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    if not (math.isfinite(args.timeout) and args.timeout >= 0):
        raise exception.InvalidConfig(
            reason=f"--timeout {args.timeout}: give 0 or more seconds (0: power off at once)"
        )
    common.compute_driver(conf).power_off(args.name, timeout=args.timeout)
    print(f"Instance {args.name} stopped")
    return 0


def block_device_info_from_files(paths: Sequence[str]) -> dict[str, Any]:
    """Nova's block_device_info from Cinder connection_info JSON files."""
    mappings = []
    for path in paths:
        try:
            info = json.loads(
                textfile.read_text(path, "volume connection_info", textfile.CONFIG_LIMIT)
            )
        except exception.InputUnreadable as exc:
            raise exception.InvalidConfig(reason=str(exc)) from None
        except OSError as exc:
            raise exception.InvalidConfig(
                reason=f"cannot read volume connection_info {path}: {exc.strerror}"
            ) from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise exception.InvalidConfig(
                reason=f"volume connection_info {path} is not JSON: {exc}"
            ) from None
        if not isinstance(info, dict):
            raise exception.InvalidConfig(
                reason=f"volume connection_info {path} holds a JSON {type(info).__name__}; "
                "give Cinder's connection_info object"
            )
        mapping = info if "connection_info" in info else {"connection_info": info}
        mappings.append(mapping)
    return {"block_device_mapping": mappings}
