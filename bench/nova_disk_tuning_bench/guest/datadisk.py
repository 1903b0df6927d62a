"""The data disks of the in-guest bench, made by the plugin's own image backends.

Each layout is one ``[libvirt] images_type`` (loaded by entry point, like the
compute driver does) with one ``preallocate_images``: raw disks are the flat
backend's blank disks, qcow2 overlays the qcow2 backend's root disks on a
sparse raw base (reading holes keeps copy-on-write reads cheap and equal for
every overlay layout), and the LVM layout the lvm backend's thick volumes in
a volume group on a loop device. The backend measures each disk after making
it; those facts are what the policy's pick and the safety rules see.

The loop device's backing file is fully allocated: a real disk does not
allocate on write, and a sparse file under a "thick" volume would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning.agent import loader
from nova_disk_tuning.agent.assembly import GuestDisk
from nova_disk_tuning.agent.imagebackend.base import ImageBackend
from nova_disk_tuning.common.units import MiB
from nova_disk_tuning.images.cache import CachedImage
from nova_disk_tuning.images.qemu_img import QemuImg
from nova_disk_tuning.storage.preallocate import preallocate
from nova_disk_tuning_bench.guest.errors import GuestBenchError
from nova_disk_tuning_bench.guest.matrix import GuestLayout

LOG = logging.getLogger(__name__)

LVM_TOOLS = ("pvcreate", "vgcreate", "vgremove", "lvcreate", "lvremove", "losetup")
LVM_IMAGE = "lvm-pv.img"
# Room for LVM's metadata and extent rounding besides the one volume.
LVM_SLACK = 64 * MiB


def _run(argv: list[str]) -> str:
    # Without udev (a container), device-mapper would wait for udev to make the
    # /dev/<vg>/<lv> nodes; DM_DISABLE_UDEV makes LVM create them itself.
    env = {**os.environ, "LC_ALL": "C", "DM_DISABLE_UDEV": "1"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GuestBenchError(reason=f"{' '.join(argv)}: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise GuestBenchError(reason=f"{' '.join(argv)} failed: {detail}")
    return proc.stdout


def lvm_missing() -> str | None:
    """Why the LVM layout cannot be measured here, or None."""
    missing = [tool for tool in LVM_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian package lvm2)"
    # The kernel's device-mapper registers a misc device; without it lvcreate fails
    # ("striped: Required device-mapper target(s) not detected in your kernel"), as
    # on a VM kernel built without dm-mod.
    try:
        with open("/proc/misc", encoding="ascii", errors="replace") as handle:
            if not any(line.split()[1:] == ["device-mapper"] for line in handle):
                return "the kernel has no device-mapper (dm-mod), which LVM needs"
    except OSError:
        pass
    return None


def release_loops(workdir: Path) -> None:
    """Remove the volume group and detach the loop device a run left behind in ``workdir``."""
    image = workdir / LVM_IMAGE
    if not image.exists() or shutil.which("losetup") is None:
        return
    out = subprocess.run(
        ["losetup", "-j", str(image)], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        device = line.split(":", 1)[0]
        if shutil.which("pvs"):
            vg = subprocess.run(
                ["pvs", "--noheadings", "-o", "vg_name", device],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "DM_DISABLE_UDEV": "1"},
            ).stdout.strip()
            if vg:
                LOG.warning("removing volume group %s left by an earlier run", vg)
                with contextlib.suppress(GuestBenchError):
                    _run(["vgremove", "--force", "--yes", vg])
        LOG.warning("detaching %s (%s) left by an earlier run", device, image)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


class DataDisks:
    """Makes and removes the data disk of each layout; :meth:`close` undoes the set-up."""

    def __init__(self, conf: cfg.ConfigOpts, workdir: Path, size: int) -> None:
        self.conf = conf
        self.workdir = workdir
        self.size = size
        self.instances = workdir / "instances"
        self.instances.mkdir(parents=True, exist_ok=True)
        self._base: CachedImage | None = None
        self._vg: str | None = None
        self._loop: str | None = None
        self._count = 0

    # -------------------------------------------------------------------- set-up

    def _overlay_base(self) -> CachedImage:
        if self._base is None:
            path = str(self.workdir / "base.raw")
            QemuImg(self.conf).create(path, "raw", self.size, preallocation="none")
            self._base = CachedImage(path=path, format="raw", virtual_size=self.size, created=True)
        return self._base

    def _volume_group(self) -> str:
        if self._vg is None:
            image = str(self.workdir / LVM_IMAGE)
            with open(image, "wb") as handle:
                handle.truncate(self.size + LVM_SLACK)
            result = preallocate(image, self.size + LVM_SLACK)
            if not result.allocated:
                LOG.warning("LVM backing file %s is sparse: %s", image, result.reason)
            self._loop = _run(["losetup", "--find", "--show", image]).strip()
            group = f"ndtbench{os.getpid()}"
            _run(["pvcreate", "--yes", self._loop])
            _run(["vgcreate", "--yes", group, self._loop])
            self._vg = group
        return self._vg

    def close(self) -> None:
        if self._vg is not None:
            with contextlib.suppress(GuestBenchError):
                _run(["vgremove", "--force", "--yes", self._vg])
            self._vg = None
        if self._loop is not None:
            subprocess.run(["pvremove", "--yes", self._loop], capture_output=True, check=False)
            subprocess.run(["losetup", "-d", self._loop], capture_output=True, check=False)
            self._loop = None

    # -------------------------------------------------------------------- disks

    @contextlib.contextmanager
    def configured(self, layout: GuestLayout) -> Iterator[None]:
        """nova.conf set as a host running ``layout`` would have it."""
        overrides = {
            ("DEFAULT", "instances_path"): str(self.instances),
            ("DEFAULT", "preallocate_images"): layout.preallocation,
            ("libvirt", "images_type"): layout.images_type,
            ("libvirt", "volume_clear"): "none",
        }
        if layout.images_type == "lvm":
            overrides[("libvirt", "images_volume_group")] = self._volume_group()
        for (group, name), value in overrides.items():
            self.conf.set_override(name, value, None if group == "DEFAULT" else group)
        try:
            yield
        finally:
            for group, name in overrides:
                self.conf.clear_override(name, None if group == "DEFAULT" else group)

    @contextlib.contextmanager
    def _backend(self, layout: GuestLayout) -> Iterator[ImageBackend]:
        """The image backend of ``layout``, under :meth:`configured`."""
        with self.configured(layout):
            yield loader.image_backend(self.conf)(self.conf)

    def make(self, layout: GuestLayout, target: str = "vda") -> GuestDisk:
        """A fresh data disk of ``layout``; the backend measured it."""
        self._count += 1
        instance_dir = str(self.instances / f"{layout.name}-{self._count}")
        with self._backend(layout) as backend:
            if layout.overlay:
                return backend.create_root(instance_dir, target, self._overlay_base(), self.size)
            return backend.create_blank(instance_dir, target, self.size)

    def destroy(self, layout: GuestLayout, disk: GuestDisk) -> None:
        with self._backend(layout) as backend:
            backend.destroy([disk])
        for path in disk.created:
            parent = os.path.dirname(path)
            if parent.startswith(str(self.instances) + os.sep):
                shutil.rmtree(parent, ignore_errors=True)
