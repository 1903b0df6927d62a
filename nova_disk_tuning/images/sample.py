"""A small real image to boot or spawn from: an ext4 file system with files, as qcow2.

``make demo`` spawns its instances from it, and the functional tests use it
wherever a real image is wanted; building it takes e2fsprogs and qemu-img.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from nova_disk_tuning import exception


def build_sample_image(directory: str, size_mb: int = 64, name: str = "demo") -> str:
    """A qcow2 image of an ext4 file system holding a few files; returns its path."""
    content = os.path.join(directory, f"{name}-content")
    os.makedirs(os.path.join(content, "etc"), exist_ok=True)
    with open(os.path.join(content, "etc", "hostname"), "w") as handle:
        handle.write(f"{name}\n")
    with open(os.path.join(content, "README"), "w") as handle:
        handle.write("A file system image made by nova-disk-tuning for its demo.\n")
    with open(os.path.join(content, "data.bin"), "wb") as handle:
        handle.write(os.urandom(4 << 20))
    raw = os.path.join(directory, f"{name}.raw")
    image = os.path.join(directory, f"{name}.qcow2")
    with open(raw, "wb") as handle:
        handle.truncate(size_mb << 20)
    for argv in (
        ["mkfs.ext4", "-q", "-F", "-L", name, "-d", content, raw],
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, image],
    ):
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True)
        except FileNotFoundError:
            raise exception.InvalidConfig(
                reason=f"{argv[0]} is not installed (Debian: e2fsprogs, qemu-utils)"
            ) from None
        except subprocess.CalledProcessError as exc:
            raise exception.ImageError(
                path=raw, reason=f"{' '.join(argv)} failed: {exc.stderr.strip()}"
            ) from None
    os.unlink(raw)
    shutil.rmtree(content)
    return image
