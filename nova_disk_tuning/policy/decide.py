"""THE disk tuning policy: facts about a disk + the host + nova.conf -> settings + reasons.

Every choice of ``cache``, ``io``, ``discard``, ``detect_zeroes``,
``discard_no_unref``, ``iothread`` and ``queues`` is made here (the discard
decisions in :mod:`.discard`, the IOThread plan in :mod:`.iothreads`) and
nowhere else. Every producer of disks reports facts
(:class:`~nova_disk_tuning.policy.facts.DiskFacts`, measured by
:mod:`.measure`); :mod:`nova_disk_tuning.domxml` (or, inside nova-compute,
Nova's config objects) renders what :meth:`DiskTuning.apply` sets. Nothing
here does I/O or reads config at import time, so every decision can be
tested row by row and explained to an operator (``nova-disk-tuning
explain``).

Entry points:

* :func:`decide` - one disk (everything but IOThreads).
* :func:`tune_guest` - all disks of a guest plus its IOThread plan; what the
  compute driver calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.common.units import human_size
from nova_disk_tuning.conf import preallocation
from nova_disk_tuning.domxml.disk_values import DISK_CACHE_MODES, DISK_SOURCE_TYPES
from nova_disk_tuning.policy import safety
from nova_disk_tuning.policy.discard import decide_detect_zeroes, decide_discard
from nova_disk_tuning.policy.facts import Decision, DiskFacts, HostCaps
from nova_disk_tuning.policy.iothreads import IOThreadPlan, plan_iothreads
from nova_disk_tuning.policy.result import DiskTuning, GuestTuning

LOG = logging.getLogger(__name__)

__all__ = [
    "Decision",
    "DiskFacts",
    "DiskTuning",
    "GuestTuning",
    "HostCaps",
    "IOThreadPlan",
    "decide",
    "parse_cachemodes",
    "plan_iothreads",
    "tune_guest",
]

# The storage io_uring hung guests on: the rule is safety's, named here too.
IO_URING_DENYLIST = safety.IO_URING_DENYLIST
IO_URING_DENYLIST_UNLESS_DIRECT = safety.IO_URING_DENYLIST_UNLESS_DIRECT


def parse_cachemodes(entries: Iterable[str]) -> dict[str, str]:
    """``[libvirt] disk_cachemodes`` with Nova's semantics.

    Entries are ``type=mode``; an entry with an unknown type or mode, or
    without ``=``, is reported and ignored; the last entry for a type wins.
    """
    modes: dict[str, str] = {}
    for entry in entries:
        source_type, sep, mode = (part.strip() for part in entry.partition("="))
        if not sep or source_type not in DISK_SOURCE_TYPES or mode not in DISK_CACHE_MODES:
            LOG.warning(
                "Ignoring [libvirt] disk_cachemodes entry %r: expected type=mode with "
                "type in file, block, network and mode in %s.",
                entry,
                ", ".join(DISK_CACHE_MODES),
            )
            continue
        modes[source_type] = mode
    return modes


# Decisions --------------------------------------------------------------------


def decide(disk: DiskFacts, host: HostCaps, conf: cfg.ConfigOpts) -> DiskTuning:
    """Decide cache, io, discard, detect_zeroes and discard_no_unref for one disk.

    IOThread binding and queues need the whole guest: see :func:`tune_guest`.
    """
    cache = _decide_cache(disk, conf)
    io = _decide_io(disk, host, conf, _cache_mode(cache))
    discard, no_unref = decide_discard(disk, host, conf, _keyword(io))
    return DiskTuning(
        disk=disk.name,
        cache=cache,
        io=io,
        discard=discard,
        detect_zeroes=decide_detect_zeroes(conf, _keyword(discard)),
        discard_no_unref=no_unref,
    )


def tune_guest(
    disks: Sequence[DiskFacts],
    host: HostCaps,
    conf: cfg.ConfigOpts,
    vcpus: int,
    extra_specs: Mapping[str, str] | None = None,
) -> GuestTuning:
    """Decide every disk of a guest and plan its IOThreads."""
    names = [d.name for d in disks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise exception.InvalidDiskConfig(
            disk=duplicates[0], reason="two disks share this name; each needs its own target"
        )
    plan = plan_iothreads(disks, vcpus, conf, host, extra_specs)
    tunings = []
    for facts in disks:
        binding = plan.for_disk(facts.name)
        tunings.append(
            replace(
                decide(facts, host, conf),
                iothread=binding.iothread,
                iothread_queues=binding.iothread_queues,
                queues=binding.queues,
            )
        )
    return GuestTuning(host=host, disks=tuple(tunings), iothreads=plan)


def _decide_cache(disk: DiskFacts, conf: cfg.ConfigOpts) -> Decision:
    if disk.shareable:
        # Nova lets disk_cachemodes override this; a host page cache on a
        # multi-attached disk serves stale data written by the other hosts.
        return Decision("none", "shareable (multi-attach) disk: no host page cache")
    configured = parse_cachemodes(conf.libvirt.disk_cachemodes).get(disk.source_type)
    if configured is not None:
        source = f"[libvirt] disk_cachemodes {disk.source_type}={configured}"
        if safety.is_direct(configured) and disk.direct_io is False:
            # QEMU opens the disk with O_DIRECT and fails to start the guest.
            fallback = "writeback" if configured == "none" else "writethrough"
            LOG.warning(
                "Disk %s: %s needs O_DIRECT, which %s does not support; using %s.",
                disk.name,
                source,
                disk.path,
                fallback,
            )
            return Decision(
                fallback,
                f"{source} needs O_DIRECT, which does not work at {disk.path}: {fallback}",
            )
        return Decision(configured, source)
    if disk.source_type == "network":
        return Decision("none", "network disk: QEMU's own client; none is Nova's default")
    if disk.direct_io:
        # Measured in the guest (bench guest, 2026-11-26): on a 2 GiB disk the
        # writeback cells were up to 2.3x none, all of it the host's RAM; on a
        # 32 GiB disk, past the host's dirty limit, 30 s of 1M writes ran at
        # 0.31x none (376 vs 1,214 IOPS), while QD1 4K writes (10 MiB/s) kept
        # writeback 1.12-1.21x ahead. none also keeps the disk migratable on
        # shared storage and the guest's data out of the host's memory.
        return Decision(
            "none",
            f"O_DIRECT works at {disk.path}: bypass the host page cache (in the guest, "
            "writeback fell to 0.31x none once 1M writes outran the host's dirty limit)",
        )
    if disk.direct_io is False:
        # Never writethrough (it syncs every write: 10.6 s vs 2.8 s writeback
        # for a 3 GiB convert here); writeback still honours guest flushes.
        return Decision(
            "writeback", f"O_DIRECT does not work at {disk.path}: writeback (honours flushes)"
        )
    if disk.source_type == "block":
        return Decision("none", "block device (O_DIRECT not measured; block devices allow it)")
    return Decision("writeback", f"O_DIRECT not measured at {disk.path}: writeback opens anywhere")


def _keyword(decision: Decision) -> str | None:
    """The value of an io or discard decision: a libvirt keyword, or None to emit nothing."""
    if decision.value is not None and not isinstance(decision.value, str):
        raise TypeError(f"{decision.value!r} is not a libvirt keyword ({decision.reason})")
    return decision.value


def _cache_mode(cache: Decision) -> str:
    """The value of a :func:`_decide_cache` decision, which always names a cache mode."""
    mode = _keyword(cache)
    if mode is None:
        raise TypeError(f"the cache decision names no cache mode ({cache.reason})")
    return mode


def _decide_io(disk: DiskFacts, host: HostCaps, conf: cfg.ConfigOpts, cache: str) -> Decision:
    if disk.source_type == "network":
        return Decision(None, "network disk: QEMU's own client, io has no effect")
    mode = conf.disk_tuning.aio_mode
    if mode == "default":
        return Decision(None, "[disk_tuning] aio_mode=default: QEMU's default (threads)")
    if mode == "threads":
        return Decision("threads", "[disk_tuning] aio_mode=threads")
    if mode == "native":
        return _forced_native(disk, cache, "[disk_tuning] aio_mode=native")
    hint, hint_note = _hint(disk, conf)
    if mode == "io_uring" or hint == "io_uring":
        source = "[disk_tuning] aio_mode=io_uring" if mode == "io_uring" else hint_note
        denied = _io_uring_denied(disk, host, cache)
        if not denied:
            return Decision("io_uring", f"{source}: {host.describe()} and the kernel allow it")
        fallback = _preferred(
            disk, host, cache, None if hint == "io_uring" else hint, hint_note, io_uring=False
        )
        LOG.info("Disk %s: io_uring not used (%s); %s", disk.name, denied, fallback.value)
        return Decision(fallback.value, f"io_uring not used ({denied}); {fallback.reason}")
    decision = _preferred(disk, host, cache, hint, hint_note)
    wanted = preallocation(conf)
    if wanted != "none" and decision.value != "native" and disk.allocation_covers_size is False:
        # Nova would set native here from the config alone; say why we do not.
        LOG.warning(
            "Disk %s: preallocate_images=%s, but %s is not fully allocated "
            "(fallocate failed or was not done): %s, not native.",
            disk.name,
            wanted,
            disk.path,
            decision.value,
        )
        decision = Decision(
            decision.value, f"{decision.reason}; preallocate_images={wanted} did not take effect"
        )
    return decision


def _hint(disk: DiskFacts, conf: cfg.ConfigOpts) -> tuple[str | None, str]:
    """The driver's AIO preference and a note on it for the reason."""
    if disk.aio_hint is None:
        return None, ""
    who = f"{'volume' if disk.is_volume else 'backend'} driver {disk.driver or '?'}"
    if disk.is_volume and conf.libvirt.use_default_aio_mode_for_volumes:
        return None, (
            f"{who} prefers {disk.aio_hint}, ignored ([libvirt] use_default_aio_mode_for_volumes)"
        )
    return disk.aio_hint, f"{who} prefers {disk.aio_hint}"


def _preferred(
    disk: DiskFacts,
    host: HostCaps,
    cache: str,
    hint: str | None,
    note: str,
    io_uring: bool = True,
) -> Decision:
    """The auto choice, following the driver's hint where the facts allow it.

    ``io_uring=False``: io_uring was asked for and refused; do not offer it again.
    """

    def why(text: str, joiner: str = "; ") -> str:
        return f"{note}{joiner}{text}" if note else text

    but = ", but " if hint == "native" else "; "
    if hint == "threads":
        return Decision("threads", note)
    if not safety.is_direct(cache):
        return Decision(
            "threads", why(f"cache {cache} is not O_DIRECT (native needs cache.direct=on)", but)
        )
    if disk.source_type == "block":
        return Decision("native", why(f"block device with cache {cache}: nothing allocates"))
    covered = disk.allocation_covers_size
    if covered:
        return Decision("native", why(f"{_allocation(disk)}: nothing allocates on write"))
    if covered is None and hint == "native":
        return Decision("native", why(f"allocation of {disk.path} not measured"))
    if covered is None:
        return Decision("threads", why(f"allocation of {disk.path} not measured: threads"))
    sparse = why(_sparse_reason(disk), but)
    if io_uring and disk.format == "qcow2" and not disk.is_volume:
        return _allocating_qcow2(disk, host, cache, sparse)
    # The io_uring rule covers what was measured: the image backends' qcow2
    # files on local storage. On a sparse *raw* file io_uring against threads
    # (both with an IOThread) was mixed in the guest, 0.80-1.26x, and 0.80x
    # for 1M sequential writes; volumes (NFS and the like) were not measured.
    return Decision("threads", sparse)


def _allocating_qcow2(disk: DiskFacts, host: HostCaps, cache: str, sparse: str) -> Decision:
    """A local qcow2 file that allocates on write, behind an O_DIRECT cache: io_uring.

    Native AIO is out (it can block QEMU's thread while the file system
    allocates); io_uring does not block its submitter: a write that must
    allocate fails its non-blocking attempt and the kernel hands it to an
    io-wq worker. Measured in the guest (``bench guest``, QEMU 7.2 under TCG,
    Linux 6.1 guest, ext4, 2026-11-26) on a sparse qcow2 overlay, io_uring
    against threads, both with an IOThread: 1.05-1.43x in all five jobs (two
    repetitions), then 1.01-1.15x in all five (three repetitions; within the
    spread each time, never below). Without an IOThread: 0.87-1.29x, ahead in
    four jobs of five. Where the host or the storage does not allow
    io_uring: threads.
    """
    denied = _io_uring_denied(disk, host, cache)
    if denied:
        return Decision("threads", f"{sparse}; io_uring not used ({denied}): threads")
    return Decision(
        "io_uring",
        f"{sparse}; qcow2 allocating on write: io_uring (in the guest 1.01-1.43x threads "
        "with an IOThread, 0.87-1.29x without)",
    )


def _forced_native(disk: DiskFacts, cache: str, source: str) -> Decision:
    if not safety.is_direct(cache):
        # QEMU >= 2.6 refuses to start: "aio=native was specified, but it
        # requires cache.direct=on".
        LOG.warning(
            "Disk %s: %s demoted to threads: cache %s is not O_DIRECT "
            "(native needs cache none or directsync).",
            disk.name,
            source,
            cache,
        )
        return Decision(
            "threads",
            f"{source} demoted to threads: cache {cache} is not O_DIRECT "
            "(QEMU refuses aio=native without cache.direct=on)",
        )
    if disk.source_type == "file" and disk.allocation_covers_size is False:
        LOG.warning("Disk %s: %s forced although %s", disk.name, source, _sparse_reason(disk))
        return Decision("native", f"{source} forced although {_sparse_reason(disk)}")
    return Decision("native", source)


def _io_uring_denied(disk: DiskFacts, host: HostCaps, cache: str) -> str:
    if not host.io_uring:
        return host.io_uring_missing()
    return safety.io_uring_on_denied_storage("io_uring", cache, disk) or ""


def _allocation(disk: DiskFacts) -> str:
    what = (
        "host allocation covers the virtual size" if disk.format == "qcow2" else "fully allocated"
    )
    if disk.size is not None and disk.allocated is not None:
        return f"{disk.path} {what} ({human_size(disk.allocated)} of {human_size(disk.size)})"
    return f"{disk.path} {what}"


def _sparse_reason(disk: DiskFacts) -> str:
    amounts = ""
    if disk.size is not None and disk.allocated is not None:
        amounts = f" ({human_size(disk.allocated)} of {human_size(disk.size)} allocated)"
    reason = (
        f"{disk.path} is not fully allocated{amounts}: native AIO on a sparse file can "
        "block QEMU's thread on file system metadata updates"
    )
    return reason
