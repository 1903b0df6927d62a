"""qemu-img, run safely and fast: info, create, resize, convert.

One :class:`QemuImg` object remembers what it learnt about the installed
qemu-img (version, extended L2 support) and about the storage (through its
:class:`~nova_disk_tuning.storage.probe.StorageProbe`), so each is asked once.
Every command line is logged before it runs.

The class is built in layers, one module each, every layer using only those
below it:

- :mod:`~nova_disk_tuning.images.qemu_img_command`: starting qemu-img,
  reading its progress, its failures as our exceptions;
- :mod:`~nova_disk_tuning.images.qemu_img_info`: what the installed qemu-img
  can do, and ``info``;
- :mod:`~nova_disk_tuning.images.qemu_img_create`: ``create``, ``resize``
  and ``preallocate_images``;
- :mod:`~nova_disk_tuning.images.qemu_img_convert`: ``convert``.
"""

from __future__ import annotations

from oslo_config import cfg

from nova_disk_tuning.common.versions import Version
from nova_disk_tuning.images.qemu_img_command import (
    QEMU_IMG,
    Execute,
    Popen,
    ProgressCallback,
    parse_progress,
)
from nova_disk_tuning.images.qemu_img_convert import ConvertCommands, ConvertResult
from nova_disk_tuning.images.qemu_img_create import (
    PERFORMANCE_OVERLAY_OPTIONS,
    CreateResult,
)
from nova_disk_tuning.storage.probe import StorageProbe

__all__ = [
    "PERFORMANCE_OVERLAY_OPTIONS",
    "QEMU_IMG",
    "ConvertResult",
    "CreateResult",
    "Execute",
    "ProgressCallback",
    "QemuImg",
    "parse_progress",
]


class QemuImg(ConvertCommands):
    """The installed qemu-img, with the policy of how to call it."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        probe: StorageProbe | None = None,
        execute: Execute | None = None,
        popen: Popen | None = None,
    ) -> None:
        super().__init__(execute, popen)
        self.conf = conf
        self._probe = probe
        self._version: Version | None = None
        self._extended_l2: bool | None = None
