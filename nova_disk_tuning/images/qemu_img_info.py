"""What the installed qemu-img can do, and ``qemu-img info`` under resource limits.

:class:`InfoCommands` remembers the version and the extended L2 support of
the installed qemu-img, so each is asked once per
:class:`~nova_disk_tuning.images.qemu_img.QemuImg`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

from oslo_concurrency import processutils
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import imageutils

from nova_disk_tuning import exception
from nova_disk_tuning.common.units import GiB
from nova_disk_tuning.common.versions import TARGET_IS_ZERO_QEMU, Version
from nova_disk_tuning.images.inspection import OpenImage
from nova_disk_tuning.images.qemu_img_command import QEMU_IMG, QemuImgCommand, names
from nova_disk_tuning.storage.probe import StorageProbe

LOG = logging.getLogger(__name__)


class InfoCommands(QemuImgCommand):
    """Facts about the installed qemu-img and the storage, and ``info``; part of QemuImg."""

    conf: cfg.ConfigOpts
    _probe: StorageProbe | None
    _version: Version | None
    _extended_l2: bool | None

    @property
    def probe(self) -> StorageProbe:
        """The StorageProbe every storage question goes to (made on first use)."""
        if self._probe is None:
            self._probe = StorageProbe()
        return self._probe

    def version(self) -> Version:
        """The installed qemu-img's version, e.g. ``(7, 2, 22)``."""
        if self._version is None:
            out, _ = self._run("version", "", [QEMU_IMG, "--version"])
            match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
            if not match:
                raise exception.QemuImgError(
                    command="--version",
                    path=QEMU_IMG,
                    reason=f"unexpected output {out[:80]!r}; is qemu-img installed?",
                )
            self._version = (int(match[1]), int(match[2]), int(match[3] or 0))
        return self._version

    def supports_extended_l2(self) -> bool:
        """Whether qcow2 has ``extended_l2`` here (asked once, from qemu-img itself)."""
        if self._extended_l2 is None:
            with tempfile.TemporaryDirectory() as tmp:
                argv = [QEMU_IMG, "create", "-f", "qcow2", "-o", "help", os.path.join(tmp, "x")]
                try:
                    out, _ = self._run("create", tmp, argv)
                except exception.QemuImgError:
                    out = ""
            self._extended_l2 = "extended_l2" in out
            LOG.info("qemu-img %s extended_l2 for qcow2", "has" if self._extended_l2 else "lacks")
        return self._extended_l2

    def supports_target_is_zero(self) -> bool:
        return self.version() >= TARGET_IS_ZERO_QEMU

    def limits(self) -> processutils.ProcessLimits:
        """prlimit for qemu-img on untrusted images, from config read now."""
        return processutils.ProcessLimits(
            cpu_time=self.conf.libvirt.images_cpu_time_limit,
            address_space=self.conf.libvirt.images_address_space_limit * GiB,
        )

    def info(self, image: str | OpenImage, format: str | None = None) -> imageutils.QemuImgInfo:
        """``qemu-img info`` under resource limits, never letting it probe a known format.

        An :class:`OpenImage` is read through its checked descriptor.
        """
        reader, path = names(image)
        if not os.path.exists(reader):
            raise exception.ImageNotFound(path=path)
        argv = [QEMU_IMG, "info", "--force-share", "--output=json"]
        if format:
            argv += ["-f", format]
        argv.append(reader)
        out, _ = self._run("info", path, argv, prlimit=self.limits(), reader=reader)
        try:
            data = json.loads(out)
            if not isinstance(data, dict) or "virtual-size" not in data:
                raise ValueError("no virtual-size")
            return imageutils.QemuImgInfo(out, format="json")
        except (ValueError, TypeError) as exc:
            raise exception.QemuImgError(
                command="info",
                path=path,
                reason=f"unparseable output ({exc}): {out[:120]!r}. "
                "Check that qemu-img is a working QEMU build.",
            ) from None
