"""Base images for Nova's image cache, made by the project's pipeline.

Nova downloads an image with its image API, then checks and converts it in
``nova.virt.images.fetch_to_raw``. Here the download stays Nova's (Glance,
its auth, trusted certificates) and everything after it is the project's
:class:`~nova_disk_tuning.images.cache.ImageCache`: hostile-image checks
before anything reads the file, a conversion with a flushed target cache and
the source cache chosen from the page-cache state (the download has just
written it), crash-safe publication under the same ``_base/<sha1>`` name.
"""

from __future__ import annotations

import os
from typing import Any

from nova import exception as nova_exception
from nova.conf import CONF
from nova.virt import images as nova_images
from nova.virt.libvirt import utils as libvirt_utils
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.images.cache import ImageCache
from nova_disk_tuning.images.qemu_img_command import ProgressCallback
from nova_disk_tuning.nova import conf as nova_conf

LOG = logging.getLogger(__name__)

SCHEME = "glance"


class NovaImageFetcher:
    """``glance:<image id>`` through Nova's image API, with the caller's context."""

    def __init__(self, context: Any, trusted_certs: Any = None) -> None:
        self.context = context
        self.trusted_certs = trusted_certs

    def fetch(self, source: str, dest: str, progress: ProgressCallback | None = None) -> int:
        image_id = source.partition(":")[2]
        nova_images.fetch(self.context, image_id, dest, self.trusted_certs)
        return os.path.getsize(dest)


# Glance disk formats the project's pipeline takes over. Any other (iso, ami,
# vhd, vmdk, ...) keeps Nova's own fetch_to_raw, whose format mapping, VMDK
# subformat allow-list and deep inspection the project does not repeat.
PIPELINE_FORMATS = frozenset({"raw", "qcow2"})


def fetch_image(context: Any, target: str, image_id: str, trusted_certs: Any = None) -> None:
    """Drop-in for ``nova.virt.libvirt.utils.fetch_image``: build ``target`` in ``_base``.

    Left to Nova's own function: a target outside the image cache (Nova's
    LVM backend writes straight into the volume), a disk format outside
    :data:`PIPELINE_FORMATS`, an image whose recorded size is 0 (nothing to
    check or convert; Nova makes the disk and grows it to the flavor, where
    the pipeline would refuse the empty download as an interrupted one), and
    hosts where the operator turned Nova's deep image inspection off.
    """
    conf = nova_conf.registered(CONF)
    cache = ImageCache(conf, fetchers={SCHEME: NovaImageFetcher(context, trusted_certs)})
    declared = None
    # The local checks first: the image's metadata is a Glance call.
    if (
        os.path.abspath(target) == cache.entry_path(image_id)
        and not CONF.workarounds.disable_deep_image_inspection
    ):
        meta = nova_images.get_info(context, image_id)
        if hasattr(meta, "get") and meta.get("size") != 0:
            declared = meta.get("disk_format")
    if declared not in PIPELINE_FORMATS:
        libvirt_utils.fetch_image(context, target, image_id, trusted_certs)
        return
    try:
        cached = cache.fetch(image_id, f"{SCHEME}:{image_id}", declared)
    except exception.ImageUnacceptable as exc:
        # Nova's exception: the compute manager aborts the build instead of
        # rescheduling it to hosts that would refuse the image too.
        raise nova_exception.ImageUnacceptable(
            image_id=image_id, reason=exc.kwargs.get("reason", str(exc))
        ) from None
    if cached.conversion is not None:
        LOG.info("Image %s converted: %s", image_id, cached.conversion.to_dict())
