"""Checks on a downloaded image before any qemu-img command touches it.

qemu-img follows what an image header says: a backing file or a qcow2
external data file can make it read (and a guest see) any host file, and some
VMDK create-types name extent files anywhere on the host (CVE-2024-32498).
So the format is detected from the bytes by oslo.utils' format inspector, not
by qemu-img, and anything that points outside the image is rejected. The
bytes are read through the descriptor images/source.py opened and checked
(a non-empty, untruncated regular file or block device), never by opening
the path a second time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils.imageutils import format_inspector

from nova_disk_tuning import exception
from nova_disk_tuning.common.units import GiB
from nova_disk_tuning.images import source as image_source

LOG = logging.getLogger(__name__)

# VMDK create-types made of a single file (format_inspector names, lower case).
ALLOWED_VMDK_TYPES = frozenset({"monolithicsparse", "streamoptimized"})
# A raw disk with a partition table or an ISO 9660 file system is still raw
# to qemu-img: the inspector names what it found inside.
RAW_COMPATIBLE = frozenset({"raw", "gpt", "iso"})
# The inspector's name -> qemu-img's (Glance says vhd too; qemu's driver is vpc).
_QEMU_NAMES = {"vhd": "vpc"}
# A key is needed to read these; nothing here has one, and a failure inside
# qemu-img would name a temporary file, not the image.
_ENCRYPTED = "it is encrypted ({how}), and images are read without a key here"
_QCOW2_CRYPT_METHOD = 32  # offset of crypt_method in the qcow2 header: 0 none, 1 AES, 2 LUKS

# Bytes per read while detecting, as format_inspector.detect_file_format reads.
_DETECT_CHUNK = 4096

_CHECK_REASONS = {
    "backing_file": "it has a backing file (qemu-img would open a host file)",
    "data_file": "it is a qcow2 with an external data-file (qemu-img would open a host file)",
    "unknown_features": "it uses qcow2 features this host does not know",
    "descriptor": "its VMDK descriptor is unsafe or unsupported",
    "footer": "its VMDK footer is inconsistent",
}


@dataclasses.dataclass(frozen=True)
class Inspection:
    format: str  # the qemu-img format name: raw, qcow2, vmdk, ...
    detected: str  # what the inspector called it (e.g. gpt for a raw disk)
    virtual_size: int  # from the header; the file size for raw


@dataclasses.dataclass(frozen=True)
class OpenImage:
    """An image opened once and checked; qemu-img reads it through ``reader``.

    ``path`` is what the operator named (for messages), ``reader`` the name
    of the checked descriptor (:func:`~nova_disk_tuning.images.source.reader_name`),
    valid while the :meth:`ImageSafety.checked` block runs.
    """

    path: str
    reader: str
    inspection: Inspection
    # Permission bits a copy or conversion of it may have at most.
    copy_mode: int = 0o644

    @property
    def format(self) -> str:
        return self.inspection.format


class ImageSafety:
    """Detects an image's format from its bytes and rejects unsafe images."""

    def __init__(
        self,
        allowed_vmdk_types: frozenset[str] = ALLOWED_VMDK_TYPES,
        ceiling: int | None = None,
    ) -> None:
        """``ceiling``: the largest virtual size any image may claim, in bytes."""
        self.allowed_vmdk_types = frozenset(t.lower() for t in allowed_vmdk_types)
        self.ceiling = ceiling

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> ImageSafety:
        """The checks as ``[disk_tuning] max_image_virtual_size_gb`` says."""
        return cls(ceiling=conf.disk_tuning.max_image_virtual_size_gb * GiB)

    def detect(self, path: str) -> format_inspector.FileInspector:
        with image_source.open_source(path) as (fd, _source):
            return _inspect(fd, path)

    def check(
        self, path: str, declared_format: str | None, max_virtual_size: int | None = None
    ) -> Inspection:
        """Return what the image is, or raise ImageUnacceptable saying why not.

        ``declared_format`` None means "whatever it is" (detected formats are
        still safety-checked). For an image something else then reads, use
        :meth:`checked`: the path may name another file by then.
        """
        with self.checked(path, declared_format, max_virtual_size) as image:
            return image.inspection

    @contextlib.contextmanager
    def checked(
        self, path: str, declared_format: str | None, max_virtual_size: int | None = None
    ) -> Iterator[OpenImage]:
        """The image at ``path``, opened once and checked, held open while the block runs.

        Whatever reads it in the block (qemu-img) reads ``reader``: the
        descriptor that was checked, never the path again.
        """
        with image_source.open_source(path) as (fd, source):
            inspection = self._verdict(path, fd, source, declared_format, max_virtual_size)
            yield OpenImage(path, image_source.reader_name(fd), inspection, source.copy_mode)

    def _verdict(
        self,
        path: str,
        fd: int,
        source: image_source.Source,
        declared_format: str | None,
        max_virtual_size: int | None,
    ) -> Inspection:
        inspector = _inspect(fd, path)
        detected = str(inspector)
        qemu_format = "raw" if detected in RAW_COMPATIBLE else qemu_name(detected)
        encrypted = _encryption(fd, detected)
        problems = self._problems(inspector) + encrypted
        if declared_format and qemu_format != qemu_name(declared_format):
            reason = f"it was declared {declared_format} but its content is {detected}"
            if problems:
                reason += f", and {problems[0]}"
            reason += ". Declare the format the image really has."
            raise exception.ImageUnacceptable(path=path, reason=reason)
        if problems:
            advice = (
                "Give it decrypted (qemu-img convert --object secret,...)"
                if encrypted
                else "Use a self-contained image"
            )
            raise exception.ImageUnacceptable(
                path=path, reason="; ".join(problems) + f". {advice}."
            )
        size = inspector.virtual_size
        if qemu_format == "raw":
            # The inspector stops reading early; a raw disk is as large as its
            # file or device (st_size of a block device is 0).
            size = source.size
        if max_virtual_size is not None and size > max_virtual_size:
            raise exception.ImageUnacceptable(
                path=path,
                reason=f"its virtual size {size} bytes is larger than the allowed "
                f"{max_virtual_size} bytes (the flavor's disk). Use a larger flavor.",
            )
        if self.ceiling is not None and size > self.ceiling:
            raise exception.ImageUnacceptable(
                path=path,
                reason=f"its virtual size {size} bytes is larger than [disk_tuning] "
                f"max_image_virtual_size_gb ({self.ceiling // GiB} GiB). Use an image of "
                "the size its guest needs, or raise the option for a trusted one.",
            )
        LOG.info("image %s is %s (detected %s), virtual size %d", path, qemu_format, detected, size)
        return Inspection(format=qemu_format, detected=detected, virtual_size=size)

    def _problems(self, inspector: format_inspector.FileInspector) -> list[str]:
        vmdk_type = getattr(inspector, "vmdktype", None)
        if str(inspector) == "vmdk" and vmdk_type not in self.allowed_vmdk_types:
            allowed = ", ".join(sorted(self.allowed_vmdk_types))
            return [f"its VMDK create-type {vmdk_type!r} is not allowed (allowed: {allowed})"]
        try:
            inspector.safety_check()
        except format_inspector.SafetyCheckFailed as exc:
            return [
                _CHECK_REASONS.get(name.removeprefix("inner_"), f"{name}: {failure}")
                for name, failure in sorted(exc.failures.items())
            ]
        except format_inspector.ImageFormatError as exc:
            return [f"it cannot be safety-checked ({exc})"]
        return []


def qemu_name(fmt: str) -> str:
    """The qemu-img name of a format named by the inspector or by Glance (vhd is vpc)."""
    return _QEMU_NAMES.get(fmt, fmt)


def _encryption(fd: int, detected: str) -> list[str]:
    if detected == "luks":
        return [_ENCRYPTED.format(how="a LUKS volume")]
    if detected == "qcow2":
        method = int.from_bytes(os.pread(fd, 4, _QCOW2_CRYPT_METHOD), "big")
        if method:
            how = {1: "qcow2 with AES", 2: "qcow2 with LUKS"}.get(method, f"qcow2 method {method}")
            return [_ENCRYPTED.format(how=how)]
    return []


def _inspect(fd: int, path: str) -> format_inspector.FileInspector:
    """The format inspector's verdict on the open image ``fd`` (read from its start).

    What ``format_inspector.detect_file_format`` does, on a descriptor that
    was checked instead of on a path it would open again.
    """
    try:
        with open(fd, "rb", closefd=False) as handle:
            wrapper = format_inspector.InspectWrapper(handle)
            try:
                while wrapper.format is None and wrapper.read(_DETECT_CHUNK):
                    pass
            finally:
                wrapper.close()
            inspector = wrapper.format
    except format_inspector.ImageFormatError as exc:
        raise exception.ImageUnacceptable(
            path=path, reason=f"its format cannot be determined safely ({exc})"
        ) from None
    if inspector is None:
        raise exception.ImageUnacceptable(path=path, reason="its format cannot be determined")
    return inspector
