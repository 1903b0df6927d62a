"""``nova-disk-tuning demo``: two instances, their disk XML, their tuning, the image cache.

What ``make demo`` runs. On libvirt's test driver (the demo config), in a
work directory it empties first:

1. build a small real image: an ext4 file system with files in it
   (``mkfs.ext4 -d``, no mount, no root), converted to qcow2;
2. spawn ``demo-sparse`` with ``preallocate_images=none`` and
   ``demo-prealloc`` with ``preallocate_images=performance`` (two config
   overlays in ``--config-dir`` directories under the work directory), from
   the same image: the first spawn converts it into the base-image cache,
   the second reuses it;
3. show each instance's disk XML and ``explain`` table: threads for the
   sparse disks, native for the preallocated ones, and why;
4. list, then destroy both; the cached base stays for the next spawn.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.images.sample import build_sample_image

INSTANCES = (("demo-sparse", "none"), ("demo-prealloc", "performance"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Spawn two instances with different preallocation, explain them, destroy them.",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir",
        default="demo-work",
        help="Work directory, emptied first (default: %(default)s).",
    )
    parser.set_defaults(func=demo_command)


def _heading(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _run(base_argv: list[str], *argv: str, quiet: bool = False) -> str:
    """Run one CLI command in its own process, as an operator would; return its output.

    Separate processes matter with libvirt's test driver: each one starts
    with no domains, so every command shows that instances are defined again
    from their instance directories.
    """
    if not quiet:
        print(f"$ nova-disk-tuning {' '.join(argv)}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "nova_disk_tuning.cmd.main", *base_argv, *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    if not quiet:
        sys.stdout.write(proc.stdout)
        sys.stdout.flush()
    if proc.returncode:
        raise exception.NovaDiskTuningException(
            f"demo step `nova-disk-tuning {' '.join(argv)}` failed (exit code "
            f"{proc.returncode}); its error is above"
        )
    return proc.stdout


def demo_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    started = time.monotonic()
    workdir = os.path.abspath(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    config_files = list(args.config_file or [])
    uri = conf.libvirt.connection_uri or "qemu:///system"
    _heading(f"Image: an ext4 file system with files, as qcow2 (libvirt at {uri})")
    image = build_sample_image(workdir)
    print(f"{image}: {os.path.getsize(image)} bytes")

    overlays = {}
    for name, mode in INSTANCES:
        overlay = os.path.join(workdir, f"conf-{mode}")
        os.makedirs(overlay)
        with open(os.path.join(overlay, "preallocate.conf"), "w") as handle:
            handle.write(
                f"[DEFAULT]\npreallocate_images = {mode}\n"
                f"instances_path = {os.path.join(workdir, 'instances')}\n"
            )
        overlays[name] = [
            *(f"--config-file={path}" for path in config_files),
            f"--config-dir={overlay}",
        ]
    for name, mode in INSTANCES:
        _heading(f"Spawn {name} with preallocate_images={mode}")
        _run(overlays[name], "spawn", name, "--image", image, "--ephemeral-gb", "1")
    _heading("The image cache: converted once, reused by the second spawn")
    _run(overlays[INSTANCES[0][0]], "cache", "list")
    for name, mode in INSTANCES:
        _heading(f"{name} (preallocate_images={mode}): its disks in the domain XML")
        _print_disk_xml(overlays[name], name)
        _heading(f"{name}: why each setting")
        _run(overlays[name], "explain", name)
    _heading("Instances (state is kept in the instance directories)")
    _run(overlays[INSTANCES[0][0]], "list")
    for name, _mode in INSTANCES:
        _run(overlays[name], "destroy", name)
    _run(overlays[INSTANCES[0][0]], "list")
    print(f"\nDemo finished in {time.monotonic() - started:.1f} s; files in {workdir}")
    return 0


def _print_disk_xml(base_argv: list[str], name: str) -> None:
    from lxml import etree

    print(f"$ nova-disk-tuning show {name}   (its <iothreads> and <disk> elements)")
    root = etree.fromstring(_run(base_argv, "show", name, quiet=True).encode())
    threads = root.findtext("iothreads")
    print(f"<iothreads>{threads}</iothreads>" if threads else "(no IOThreads)")
    for element in root.iterfind("devices/disk"):
        print(etree.tostring(element, encoding="unicode").rstrip())
