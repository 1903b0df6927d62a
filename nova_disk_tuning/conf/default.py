"""Options of nova.conf's [DEFAULT] group that this plugin reads (Nova's names)."""

from oslo_config import cfg

from nova_disk_tuning.common.versions import EXTENDED_L2_QEMU, short_version

PREALLOCATE_CHOICES = (
    ("none", "Disks are sparse: space is allocated when the guest writes."),
    (
        "space",
        "The whole disk is allocated with fallocate() when it is created, so a "
        "full file system is reported at once (ENOSPC) instead of while the "
        "guest writes.",
    ),
    (
        "performance",
        "As 'space', and qcow2 disks are created preallocated too: overlays "
        "with extended L2 entries (extended_l2=on, 128 KiB clusters, "
        f"preallocation=falloc), which needs qemu-img >= {short_version(EXTENDED_L2_QEMU)}. "
        "Falls back to 'space' with a warning where qemu-img lacks it.",
    ),
)
# The modes, as every reader of the option names them.
PREALLOCATE_MODES = tuple(name for name, _ in PREALLOCATE_CHOICES)

default_opts = [
    cfg.StrOpt(
        "state_path",
        default="/var/lib/nova",
        help="""
Top-level directory for maintaining the compute host's state.

Related options:

* ``instances_path``, which defaults to ``$state_path/instances``.
""",
    ),
    cfg.StrOpt(
        "instances_path",
        default="$state_path/instances",
        help="""
Where instances are stored on disk.

Instance directories (``$instances_path/<uuid>/``), the image cache
(``$instances_path/_base``) and the lock files (``$instances_path/locks``)
live here.

Possible values:

* An absolute directory path.
""",
    ),
    cfg.StrOpt(
        "preallocate_images",
        default="none",
        choices=PREALLOCATE_CHOICES,
        help="""
How instance disks are allocated on the host's storage.

Preallocated disks avoid allocation on the guest's write path (faster first
writes, and native AIO becomes safe) and make a full file system fail the
spawn instead of pausing a running guest.

Related options:

* ``[libvirt] images_type``: which backend creates the disks.
* ``[disk_tuning] aio_mode``: native AIO is chosen only for disks whose
  measured allocation covers their size.
""",
    ),
    cfg.BoolOpt(
        "force_raw_images",
        default=True,
        help="""
Convert cached base images to raw.

Raw bases are faster to read for every instance built on them, at the cost
of disk space and one conversion per image per host.

Related options:

* ``use_cow_images``: qcow2 overlays on the (raw) base.
""",
    ),
    cfg.BoolOpt(
        "use_cow_images",
        default=True,
        help="""
Create instance disks as qcow2 overlays on the cached base image.

Only used when ``[libvirt] images_type`` is ``default``: True selects the
``qcow2`` backend, False the ``flat`` backend (full raw copies).
""",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(default_opts)


def list_opts() -> dict:
    return {"DEFAULT": default_opts}
