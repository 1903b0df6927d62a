"""The safety rules: what QEMU refuses and what puts data or the guest at risk.

Each rule is written once, here. The policy (:mod:`.policy`) asks them while
it chooses and never chooses an unsafe setting (except where the operator
forces it); the guest builder's last guard before libvirt and ``audit``
ask them about settings somebody else chose: a hand-written domain, one
defined by Nova, one edited with ``virsh edit``. Each predicate returns why
the combination is unsafe, or None when it is not.
"""

from __future__ import annotations

from nova_disk_tuning.common.units import human_size
from nova_disk_tuning.policy.facts import DiskFacts

# The cache modes that open the disk with O_DIRECT (cache.direct=on).
DIRECT_CACHES = frozenset({"none", "directsync"})
# QEMU's default when <driver> has no cache attribute.
QEMU_DEFAULT_CACHE = "writeback"
# Proxmox VE switched these away from io_uring after guest hangs (its storage
# plugins: LVM, CIFS; krbd only with a buffered cache).
IO_URING_DENYLIST = frozenset({"lvm", "cifs"})
IO_URING_DENYLIST_UNLESS_DIRECT = frozenset({"krbd"})


def is_direct(cache: str | None) -> bool:
    """Whether ``cache`` opens the disk with O_DIRECT (unset is QEMU's writeback)."""
    return effective_cache(cache) in DIRECT_CACHES


def effective_cache(cache: str | None) -> str:
    """The cache mode QEMU uses: an unset or ``default`` cache is writeback."""
    return QEMU_DEFAULT_CACHE if cache in (None, "default") else cache


def native_without_direct_cache(io: str | None, cache: str | None) -> str | None:
    """``io='native'`` needs ``cache.direct=on``; QEMU >= 2.6 refuses to start otherwise."""
    if io != "native" or is_direct(cache):
        return None
    return (
        f"io=native with cache {effective_cache(cache)}: native AIO needs an O_DIRECT cache "
        f"({' or '.join(sorted(DIRECT_CACHES))}); QEMU refuses to start the guest "
        "(aio=native was specified, but it requires cache.direct=on)"
    )


def direct_cache_without_o_direct(cache: str | None, facts: DiskFacts) -> str | None:
    """An O_DIRECT cache where O_DIRECT was measured not to work: QEMU cannot open the disk."""
    if not is_direct(cache) or facts.direct_io is not False:
        return None
    return (
        f"cache {cache} opens {facts.path} with O_DIRECT, which does not work there: "
        "QEMU fails to open the disk"
    )


def native_on_sparse_file(io: str | None, facts: DiskFacts) -> str | None:
    """Native AIO on a file that allocates on write can block QEMU's thread."""
    if io != "native" or facts.source_type != "file" or facts.allocation_covers_size is not False:
        return None
    return (
        f"io=native on {facts.path}, which is not fully allocated{_amounts(facts)}: "
        "writes that allocate block QEMU's thread on file system metadata updates"
    )


def io_uring_on_denied_storage(io: str | None, cache: str | None, facts: DiskFacts) -> str | None:
    """io_uring on storage where it hung guests (Proxmox VE's experience)."""
    if io != "io_uring":
        return None
    kind = (facts.storage_kind or "").lower()
    if kind in IO_URING_DENYLIST:
        return f"{kind} storage: guest hangs seen with io_uring"
    if kind in IO_URING_DENYLIST_UNLESS_DIRECT and not is_direct(cache):
        return (
            f"{kind} with non-direct cache {effective_cache(cache)}: guest hangs seen with io_uring"
        )
    return None


def trim_unpreallocates(
    discard: str | None, discard_no_unref: str | None, facts: DiskFacts
) -> str | None:
    """``discard='unmap'`` on a preallocated file lets guest TRIM make it sparse again.

    qcow2 with ``discard_no_unref='on'`` keeps the clusters allocated.
    """
    if discard != "unmap" or facts.source_type != "file":
        return None
    if not facts.preallocated:
        return None
    if facts.format == "qcow2" and discard_no_unref == "on":
        return None
    return (
        f"discard=unmap on preallocated {facts.path} without discard_no_unref: guest TRIM "
        "punches holes, making it sparse again (and native AIO unsafe)"
    )


def _amounts(facts: DiskFacts) -> str:
    if facts.size is None or facts.allocated is None:
        return ""
    return f" ({human_size(facts.allocated)} of {human_size(facts.size)} allocated)"
