"""Options of this plugin's own [disk_tuning] group."""

from oslo_config import cfg

from nova_disk_tuning.common.versions import (
    DISCARD_NO_UNREF_LIBVIRT,
    IO_URING_LIBVIRT,
    IO_URING_QEMU,
    QUEUE_MAPPING_LIBVIRT,
    QUEUE_MAPPING_QEMU,
    short_version,
)
from nova_disk_tuning.conf.default import PREALLOCATE_CHOICES

disk_tuning_group = cfg.OptGroup(
    "disk_tuning",
    title="Disk tuning options",
    help="How nova-disk-tuning chooses the I/O settings of instance disks.",
)

disk_tuning_opts = [
    cfg.StrOpt(
        "preallocate_images",
        choices=PREALLOCATE_CHOICES,
        help="""
Overrides ``[DEFAULT] preallocate_images`` when set.

Inside Nova's nova-compute, ``[DEFAULT] preallocate_images`` is Nova's own
option, which accepts only ``none`` and ``space``: set ``performance`` here
to get preallocated qcow2 overlays. Unset: ``[DEFAULT] preallocate_images``
decides.
""",
    ),
    cfg.StrOpt(
        "aio_mode",
        default="auto",
        choices=(
            (
                "auto",
                "native where the cache is O_DIRECT and the storage does not "
                "allocate on write (block devices, fully allocated files); "
                "io_uring for qcow2 files that allocate on write behind an "
                "O_DIRECT cache, where io_uring is allowed (as for io_uring "
                "below); threads otherwise.",
            ),
            (
                "io_uring",
                f"io_uring where libvirt >= {short_version(IO_URING_LIBVIRT)}, "
                f"QEMU >= {short_version(IO_URING_QEMU)} and the kernel "
                "allow it and the storage is not known to hang with it (LVM, "
                "CIFS, krbd with a non-direct cache); otherwise as auto.",
            ),
            ("native", "native wherever it is legal; threads elsewhere."),
            ("threads", "threads for every local disk."),
            ("default", "Emit no io attribute: QEMU's default (threads)."),
        ),
        help="""
AIO mode of local disks (``<driver io=...>``).

Network disks (QEMU's own rbd/iscsi/nbd clients) never get an io attribute:
it has no effect there. A forced mode that is illegal for a disk (native
without an O_DIRECT cache) is demoted to threads, logged, and shown by
``nova-disk-tuning explain``.

Related options:

* ``[libvirt] disk_cachemodes``
* ``[libvirt] use_default_aio_mode_for_volumes``
""",
    ),
    cfg.IntOpt(
        "iothreads",
        default=1,
        min=0,
        help="""
Number of IOThreads per guest; virtio disks are bound to them round-robin.

Binding matters: an IOThread that no disk uses does nothing. A flavor can
override this with the extra spec ``hw:disk_iothreads``.

Possible values:

* 0: no IOThreads; disk I/O runs in QEMU's main loop.
* A positive integer.
""",
    ),
    cfg.IntOpt(
        "disk_queues",
        default=0,
        min=0,
        help="""
Number of queues of each virtio-blk disk and virtio-scsi controller.

Possible values:

* 0: one queue per vCPU (QEMU's default for virtio-blk since 5.2).
* A positive integer.
""",
    ),
    cfg.BoolOpt(
        "iothread_queue_mapping",
        default=True,
        help=f"""
Spread the queues of a virtio-blk disk over all IOThreads.

Used only where libvirt >= {short_version(QUEUE_MAPPING_LIBVIRT)} and QEMU >= \
{short_version(QUEUE_MAPPING_QEMU)} support per-queue mapping;
elsewhere each disk is bound to one IOThread.

Measured in the guest with 4 vCPUs and 2 IOThreads sharing 2 host CPUs,
the spread was 0.72x-1.17x one IOThread per disk (see the benchmarks): a
second IOThread with no host CPU of its own adds a thread, not a CPU. Ask
for more than one IOThread (``iothreads``, ``hw:disk_iothreads``) where the
host has CPUs to spare for them.
""",
    ),
    cfg.StrOpt(
        "detect_zeroes",
        choices=(
            ("off", "No detection."),
            ("on", "Turn written zeros into write-zeroes requests."),
            ("unmap", "As on, and unmap them where discard is unmap."),
        ),
        help="""
QEMU's detection of guest writes that contain only zeros.

When unset, nothing is emitted (QEMU's default: off). ``unmap`` is used only
on disks with ``discard='unmap'``; elsewhere it is lowered to ``on``.
""",
    ),
    cfg.BoolOpt(
        "discard_no_unref",
        default=True,
        help=f"""
Keep preallocated qcow2 disks allocated when the guest discards.

With ``[libvirt] hw_disk_discard = unmap`` and preallocation on, guest TRIM
would punch holes into a preallocated disk, making it sparse again (and
native AIO unsafe). Where libvirt >= {short_version(DISCARD_NO_UNREF_LIBVIRT)}, \
``discard_no_unref='on'`` keeps the clusters allocated in qcow2 disks.
""",
    ),
    cfg.StrOpt(
        "convert_source_cache",
        default="auto",
        choices=("auto", "none", "writeback", "directsync", "unsafe"),
        help="""
Source cache mode of ``qemu-img convert`` (``-T``).

``auto`` looks at the source's page-cache state when the conversion starts
(cachestat, or mincore on kernels before 6.5): ``writeback`` (read through
the page cache) when at least half of it is cached, as the image just
downloaded into the image cache is; ``none`` (O_DIRECT) otherwise.
``none`` always reads with O_DIRECT where the source allows it (falling back
to ``writeback`` where it does not).

Related options:

* ``convert_target_is_zero``, ``convert_out_of_order``
""",
    ),
    cfg.BoolOpt(
        "convert_out_of_order",
        default=True,
        help="""
Let ``qemu-img convert`` write raw targets out of order (``-W``).
""",
    ),
    cfg.IntOpt(
        "convert_coroutines",
        default=8,
        min=1,
        max=16,
        help="""
Parallel coroutines of ``qemu-img convert`` (``-m``, 1 to 16).
""",
    ),
    cfg.BoolOpt(
        "convert_target_is_zero",
        default=True,
        help="""
Convert into a freshly allocated, zeroed target (``-n --target-is-zero``)
instead of letting qemu-img create the target and zero it as it goes.
""",
    ),
    cfg.IntOpt(
        "convert_cpu_time_per_gib",
        default=6000,
        min=0,
        help="""
CPU seconds a ``qemu-img convert`` may use per GiB its source allocates,
plus 60 s; past that it is stopped and the image rejected.

The work of a conversion is bounded by what the source holds, not by the
virtual size it claims: the worst case measured (qemu-img 7.2, a qcow2 of
maximally compressible data, zlib, 64 KiB clusters) was 1.5 CPU seconds per
allocated MiB, about 1500 s per GiB; random data converts at about 1 s per
GiB. The default leaves four times the worst case. The 60 s cover walking
the empty part of a virtual size up to ``max_image_virtual_size_gb``
(0.01 s per TiB measured).

Possible values:

* 0: no limit (trusted images only).
* A positive integer.
""",
    ),
    cfg.IntOpt(
        "lock_wait_timeout",
        default=3600,
        min=0,
        help="""
Seconds a spawn, destroy or image fetch waits for a lock another process
holds (the image's cache entry, the instance's name, a disk-operation slot)
before it gives up.

While it waits it says, at once and every 30 s, which process holds the
lock and whether that process is stopped. The default covers fetching and
converting a large image, which holds its cache entry's lock throughout.

Possible values:

* 0: wait as long as it takes (still reported).
* A positive integer.
""",
    ),
    cfg.IntOpt(
        "max_image_virtual_size_gb",
        default=16384,
        min=1,
        help="""
Largest virtual size in GiB an image may claim; a larger one is rejected
before anything reads it.

A small file can claim an enormous virtual size (a 40 MB qcow2 claiming 2
EiB): walking it takes hours of CPU even where nothing is allocated. The
default, 16 TiB, is the largest file ext4 holds with 4 KiB blocks. A
flavor's root disk, where there is one, is the tighter limit.
""",
    ),
]

image_cache_group = cfg.OptGroup(
    "image_cache",
    title="Image cache options",
    help="The per-host cache of base images under the instances path.",
)

image_cache_opts = [
    cfg.StrOpt(
        "subdirectory_name",
        default="_base",
        help="""
Directory under ``[DEFAULT] instances_path`` holding the cached base images.
""",
    ),
    cfg.IntOpt(
        "remove_unused_original_minimum_age_seconds",
        default=86400,
        min=0,
        help="""
Age in seconds after which an unused cached base image may be removed.

``nova-disk-tuning cache prune`` removes entries not used for this long.
""",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(disk_tuning_group)
    conf.register_opts(disk_tuning_opts, group=disk_tuning_group)
    conf.register_group(image_cache_group)
    conf.register_opts(image_cache_opts, group=image_cache_group)


def list_opts() -> dict:
    return {disk_tuning_group: disk_tuning_opts, image_cache_group: image_cache_opts}
