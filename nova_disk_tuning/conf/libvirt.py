"""Options of nova.conf's [libvirt] group that this plugin reads (Nova's names)."""

from oslo_config import cfg

libvirt_group = cfg.OptGroup(
    "libvirt",
    title="Libvirt options",
    help="Options for the libvirt connection and the disks of libvirt guests.",
)

libvirt_opts = [
    cfg.StrOpt(
        "connection_uri",
        default="",
        help="""
libvirt connection URI.

Possible values:

* An empty string: ``qemu:///system``.
* Any libvirt URI, e.g. ``test:///default`` (libvirt's in-process test
  driver, used by the demo) or ``qemu+unix:///system?socket=/path``.
""",
    ),
    cfg.StrOpt(
        "virt_type",
        default="kvm",
        choices=("kvm", "qemu"),
        help="""
Domain type of the guests this host runs.

Possible values:

* ``kvm``: hardware virtualisation.
* ``qemu``: software emulation (TCG), for hosts without usable KVM.
""",
    ),
    cfg.StrOpt(
        "images_type",
        default="default",
        help="""
Image backend that creates instance disks.

Possible values:

* ``default``: ``qcow2`` if ``[DEFAULT] use_cow_images`` is true, else ``flat``.
* ``flat`` (alias ``raw``), ``qcow2``, ``lvm``, ``rbd``, or the name of any
  backend installed in the ``nova_disk_tuning.image_backends`` entry-point
  group. An unknown name is an error that lists the installed ones.

Related options:

* ``images_volume_group`` for ``lvm``; ``images_rbd_pool`` and
  ``images_rbd_ceph_conf`` for ``rbd``.
""",
    ),
    cfg.ListOpt(
        "disk_cachemodes",
        default=[],
        help="""
Cache modes per disk source type, overriding the automatic choice.

Each entry is ``type=mode`` with type one of ``file``, ``block``,
``network`` and mode one of ``default``, ``none``, ``writethrough``,
``writeback``, ``directsync``, ``unsafe``. An invalid entry is reported and
ignored; the last entry for a type wins. Shareable (multi-attach) disks
always use ``none``.

Example: ``disk_cachemodes = file=writeback,block=none``

Related options:

* ``[disk_tuning] aio_mode``: native AIO needs ``none`` or ``directsync``.
""",
    ),
    cfg.StrOpt(
        "hw_disk_discard",
        choices=(
            ("ignore", "Guest discard requests are ignored."),
            ("unmap", "Guest discard requests punch holes in the host storage."),
        ),
        help="""
Discard (TRIM/UNMAP) behaviour of guest disks.

When unset, libvirt's default applies (discard requests are ignored).

Related options:

* ``[DEFAULT] preallocate_images``: with preallocation, ``unmap`` would
  make a preallocated disk sparse again; see ``[disk_tuning]
  discard_no_unref``.
""",
    ),
    cfg.StrOpt(
        "volume_clear",
        default="zero",
        choices=(
            ("none", "Do not wipe."),
            ("zero", "Zero with the fastest method the device supports."),
            ("shred", "Overwrite with random data (shred -n3)."),
        ),
        help="""
How to wipe logical volumes and block disks of deleted instances.

Related options:

* ``volume_clear_size``
""",
    ),
    cfg.IntOpt(
        "volume_clear_size",
        default=0,
        min=0,
        help="""
Size in MiB to wipe at the start of a volume when it is deleted.

Possible values:

* 0: wipe the whole volume.
* A positive integer: wipe that many MiB (at most the whole volume).

Related options:

* ``volume_clear``: ``none`` wipes nothing whatever this says.
""",
    ),
    cfg.BoolOpt(
        "use_default_aio_mode_for_volumes",
        default=False,
        help="""
Ignore the AIO mode that volume drivers prefer for their transport.

When true, volumes get the AIO mode of ``[disk_tuning] aio_mode`` applied
to their facts alone, as local disks do.
""",
    ),
    cfg.StrOpt(
        "nfs_mount_point_base",
        default="$state_path/mnt",
        help="""
Directory where NFS volumes are mounted on the compute host.

A share ``data.export`` is mounted at ``<this>/<md5 of the export>``
(Nova's layout) and the volume is the file ``data.name`` in it. Used only
when the volume's connection_info has no ``data.device_path``.

Related options:

* ``[DEFAULT] state_path``
""",
    ),
    cfg.StrOpt(
        "quobyte_mount_point_base",
        default="$state_path/mnt",
        help="""
Directory where Quobyte volumes are mounted on the compute host.

A volume ``data.export`` (``quobyte://`` prefix removed) is mounted at
``<this>/<md5 of the export>`` (Nova's layout) and the volume is the file
``data.name`` in it. Used only when the volume's connection_info has no
``data.device_path``.

Related options:

* ``[DEFAULT] state_path``
""",
    ),
    cfg.StrOpt(
        "images_volume_group",
        help="""
LVM volume group for instance disks when ``images_type = lvm``.
""",
    ),
    cfg.StrOpt(
        "images_rbd_pool",
        default="rbd",
        help="Ceph pool for instance disks when ``images_type = rbd``.",
    ),
    cfg.StrOpt(
        "images_rbd_ceph_conf",
        default="",
        help="Path to ceph.conf for the ``rbd`` image backend; empty: Ceph's default.",
    ),
    cfg.StrOpt(
        "rbd_user",
        help="Ceph user for RBD disks (the ``<auth username>`` of the disk).",
    ),
    cfg.StrOpt(
        "rbd_secret_uuid",
        help="UUID of the libvirt secret holding the Ceph key of ``rbd_user``.",
    ),
    cfg.IntOpt(
        "images_cpu_time_limit",
        default=30,
        min=1,
        help="""
CPU seconds a ``qemu-img info`` of an untrusted image may use.

A crafted image can make qemu-img spin; the process is killed at this
limit and the image is rejected.
""",
    ),
    cfg.IntOpt(
        "images_address_space_limit",
        default=2,
        min=1,
        help="""
Address space in GiB a ``qemu-img info`` of an untrusted image may use.

A crafted image can make qemu-img allocate without bound; the process fails
at this limit and the image is rejected. Same option, unit and default as
Nova's, so one nova.conf serves both.
""",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(libvirt_group)
    conf.register_opts(libvirt_opts, group=libvirt_group)


def list_opts() -> dict:
    return {libvirt_group: libvirt_opts}
