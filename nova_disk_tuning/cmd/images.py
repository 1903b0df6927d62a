"""Image commands: ``convert``, ``image-info`` and ``cache list|prune``."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import errno
import os

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.cmd import common
from nova_disk_tuning.common import staging, units
from nova_disk_tuning.common.files import narrow_mode
from nova_disk_tuning.images.cache import ImageCache
from nova_disk_tuning.images.inspection import ImageSafety
from nova_disk_tuning.images.qemu_img import QemuImg

FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhdx", "vpc", "qed")


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="Convert an image with qemu-img, safely flushed and fast.",
        description="Check SRC (format, backing file, data-file, VMDK type), then convert "
        "it into DST with the cache modes and options this host's storage supports.",
    )
    convert.add_argument("src", metavar="SRC")
    convert.add_argument("dst", metavar="DST")
    convert.add_argument("-O", dest="output_format", required=True, choices=FORMATS)
    convert.add_argument(
        "-f", dest="source_format", choices=FORMATS, help="Declared format of SRC (else detected)."
    )
    convert.add_argument("--json", action="store_true", help="Print one JSON object.")
    convert.set_defaults(func=convert_command)

    info = subparsers.add_parser(
        "image-info",
        help="Show an image's format and sizes (checked first, then qemu-img info).",
    )
    info.add_argument("path", metavar="PATH")
    info.add_argument("--json", action="store_true", help="Print one JSON object.")
    info.set_defaults(func=info_command)

    cache = subparsers.add_parser("cache", help="List or prune the base-image cache.")
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="List cached base images.")
    listing.add_argument("--json", action="store_true", help="Print one JSON object.")
    listing.set_defaults(func=cache_list_command)
    prune = actions.add_parser(
        "prune",
        help="Remove cached base images unused for a while and not used by any instance disk.",
    )
    prune.add_argument(
        "--max-age",
        type=float,
        metavar="SECONDS",
        help="Default: [image_cache] remove_unused_original_minimum_age_seconds.",
    )
    prune.add_argument("--json", action="store_true", help="Print one JSON object.")
    prune.set_defaults(func=cache_prune_command)


def convert_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    # Refuse early what cannot be published; publishing checks again at the end.
    check_destination(args.dst)
    qemu_img = QemuImg(conf)
    # Opened once and checked: qemu-img reads that descriptor, not the path
    # again (an image swapped in after the check is never read). The
    # conversion happens in a locked stage beside DST and is published only
    # if nothing is at DST by then: a failed, killed or racing run never
    # leaves a partial DST nor removes anything it did not make.
    with (
        ImageSafety.from_conf(conf).checked(args.src, args.source_format) as source,
        staging.Stage(args.dst) as stage,
    ):
        found = source.inspection
        with common.progress(f"convert {os.path.basename(args.src)}", enabled=not args.json) as bar:
            result = qemu_img.convert(source, stage.path, found.format, args.output_format, bar)
        # Never readable by more than the source: a 0600 image gives a 0600 DST.
        narrow_mode(stage.path, source.copy_mode)
        try:
            stage.publish()
        except FileExistsError:
            raise exception.ImageError(
                path=args.dst,
                reason="it appeared while converting (made by someone else); "
                "nothing was replaced and the conversion was discarded",
            ) from None
        except OSError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
            raise exception.ImageError(
                path=args.dst,
                reason=f"the file system of {os.path.dirname(os.path.abspath(args.dst))} "
                "has no hard links, which publishing without replacing needs there; "
                "convert into another directory",
            ) from None
    # Shown as it ran, with the names given instead of the descriptor and the stage.
    *argv, read, _ = result.command
    shown = [*argv, read.replace(source.reader, args.src), args.dst]
    result = dataclasses.replace(result, command=shown)
    if args.json:
        common.print_json({"source_format": found.format, **result.to_dict()})
    else:
        print(
            f"{args.src} ({found.format}) -> {args.dst} ({args.output_format}) "
            f"in {result.seconds:.2f} s"
        )
        print(" ".join(result.command))
    return 0


def check_destination(dst: str) -> None:
    """Refuse up front, in one line, a destination that cannot be published.

    ``lexists``, not ``exists``: a dangling symlink is something the user
    put there, and publishing would refuse it at the end anyway.
    """
    if os.path.islink(dst) and not os.path.exists(dst):
        raise exception.ImageError(
            path=dst,
            reason="the destination is a dangling symlink; remove it or choose another name",
        )
    if os.path.lexists(dst):
        raise exception.ImageError(
            path=dst, reason="the destination exists; remove it or choose another name"
        )
    if not os.path.basename(dst):
        raise exception.ImageError(path=dst, reason="the destination must name a file")
    directory = os.path.dirname(os.path.abspath(dst))
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise exception.ImageError(path=dst, reason=f"{directory} is not a directory")
    if not os.path.isdir(directory):
        raise exception.ImageError(
            path=dst, reason=f"the directory {directory} does not exist; create it first"
        )


def info_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    with ImageSafety().checked(args.path, None) as image:
        found = image.inspection
        info = QemuImg(conf).info(image, found.format)
    data = {
        "path": args.path,
        "format": found.format,
        "detected": found.detected,
        "virtual_size": int(info.virtual_size),
        "disk_size": int(info.disk_size or 0),
        "cluster_size": info.cluster_size,
        "backing_file": info.backing_file,
    }
    if args.json:
        common.print_json(data)
    else:
        common.print_table(None, ("field", "value"), list(data.items()))
    return 0


def cache_list_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    entries = ImageCache(conf).list()
    if args.json:
        common.print_json({"entries": [vars(e) for e in entries]})
        return 0
    rows = [
        (
            e.image_id,
            os.path.basename(e.path),
            e.format,
            units.human_size(e.virtual_size),
            units.human_size(e.disk_usage),
            datetime.datetime.fromtimestamp(e.last_used).isoformat(timespec="seconds"),
        )
        for e in entries
    ]
    columns = ("image id", "file", "format", "virtual size", "on disk", "last used")
    common.print_table(ImageCache(conf).base_dir, columns, rows)
    return 0


def cache_prune_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    if args.max_age is not None and not args.max_age >= 0:
        raise exception.InvalidConfig(
            reason=f"--max-age {args.max_age:g}: give 0 or more seconds "
            "(0 removes every unused entry)"
        )
    removed = ImageCache(conf).prune(max_age=args.max_age)
    if args.json:
        common.print_json({"removed": removed})
    else:
        print(f"removed {len(removed)} cached image(s)")
        for path in removed:
            print(f"  {path}")
    return 0
