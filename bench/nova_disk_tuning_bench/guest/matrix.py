"""What the in-guest bench measures: layouts x variants, and which cells are legal and safe.

A *layout* is a data disk as one ``images_type`` + ``preallocate_images``
makes it. A *variant* is the ``<driver>`` (and ``<iothreads>``) the guest
gets for that disk:

- ``defaults``: libvirt's defaults, only ``type`` in ``<driver>``, no IOThread
  (QEMU then uses cache writeback and the thread pool);
- ``nova``: Nova 34's XML for the disk: ``cache='none'``, ``io='native'`` only
  where Nova sets it (file images with ``preallocate_images=space``, thick
  LVM), ``<iothreads>1</iothreads>`` with no disk bound to it;
- ``pick``: what the plugin's policy decides from the facts measured on the
  disk (:func:`~nova_disk_tuning.policy.decide.tune_guest`);
- every other *legal* cell of cache x io x IOThread, labelled like
  ``none+native+iot`` (``+iot``: the disk bound to IOThread 1; ``+iotq``:
  its queues spread over all the guest's IOThreads, per-queue mapping,
  enumerated only for a run with two or more IOThreads on a host that has
  it). Enumerated cells set ``queues`` to the vCPU count, as the policy
  does, so a cell and the pick differ only in what their labels say.

Legal means QEMU starts the guest: the rules are
:mod:`~nova_disk_tuning.policy.safety`'s (native AIO needs an
O_DIRECT cache; an O_DIRECT cache needs storage that allows it). Legal cells
that are not *safe* (native AIO on a file that allocates on write, io_uring
on storage where it hung guests) are measured and flagged, so the fastest
safe cell can be told apart from the fastest cell. ``cache='unsafe'``
ignores the guest's flushes and is never measured.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence

from nova_disk_tuning.policy import iothreads, safety
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps
from nova_disk_tuning.policy.result import DiskTuning


@dataclasses.dataclass(frozen=True)
class GuestLayout:
    name: str
    images_type: str  # the image backend: flat, qcow2 or lvm
    preallocation: str  # preallocate_images the backend is given
    overlay: bool  # a qcow2 overlay on a base image
    title: str

    @property
    def nova_native(self) -> bool:
        """Whether Nova 34 sets io='native' for this disk (from its config, not the disk)."""
        if self.images_type == "lvm":
            return True  # Nova: native for non-sparse LVM
        return self.preallocation == "space"


LAYOUTS = (
    GuestLayout("raw-prealloc", "flat", "space", False, "raw, preallocated (space)"),
    GuestLayout("raw-sparse", "flat", "none", False, "raw, sparse"),
    GuestLayout("qcow2-overlay", "qcow2", "none", True, "qcow2 overlay, sparse"),
    GuestLayout("qcow2-overlay-space", "qcow2", "space", True, "qcow2 overlay, space"),
    GuestLayout(
        "qcow2-overlay-performance", "qcow2", "performance", True, "qcow2 overlay, performance"
    ),
    GuestLayout("lvm", "lvm", "none", False, "thick LVM volume on a loop device"),
)
LAYOUT_NAMES = tuple(layout.name for layout in LAYOUTS)
QUICK_LAYOUTS = ("raw-prealloc",)
QUICK_VARIANTS = ("defaults", "pick")

CACHES = ("none", "writeback", "writethrough", "directsync")
IO_MODES = ("threads", "native", "io_uring")
NAMED = ("defaults", "nova", "pick")


@dataclasses.dataclass(frozen=True)
class Cell:
    """The settings of the data disk that change what QEMU does."""

    cache: str | None  # None: no attribute (QEMU's writeback)
    io: str | None  # None: no attribute (QEMU's thread pool)
    iothread: bool  # on IOThreads: bound to IOThread 1, or spread (below)
    # Queues spread over all the guest's IOThreads (per-queue mapping).
    spread: bool = False

    @property
    def label(self) -> str:
        threads = ("+iotq" if self.spread else "+iot") if self.iothread else ""
        return f"{self.cache or 'default'}+{self.io or 'default'}{threads}"

    def effective(self) -> tuple[str, str, bool, bool]:
        """What QEMU runs: two cells with the same value measure the same thing."""
        return (
            safety.effective_cache(self.cache),
            self.io or "threads",
            self.iothread,
            self.spread,
        )


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    cell: Cell
    queues: int | None  # <driver queues>; None: QEMU's default
    domain_iothreads: int  # <iothreads>N</iothreads>; 0: none
    safe: bool
    why: str  # what the variant stands for, or why it is unsafe
    # The policy's decisions, applied as they are (pick only).
    tuning: DiskTuning | None = None


def legality(cell: Cell, facts: DiskFacts) -> str | None:
    """Why QEMU would refuse ``cell`` for this disk, or None when it starts."""
    return safety.native_without_direct_cache(cell.io, cell.cache) or (
        safety.direct_cache_without_o_direct(cell.cache, facts)
    )


def unsafety(cell: Cell, facts: DiskFacts) -> str | None:
    """Why ``cell`` is legal but not safe for this disk, or None."""
    return safety.native_on_sparse_file(cell.io, facts) or safety.io_uring_on_denied_storage(
        cell.io, cell.cache, facts
    )


def defaults_variant() -> Variant:
    return Variant("defaults", Cell(None, None, False), None, 0, True, "libvirt's defaults")


def nova_variant(layout: GuestLayout, facts: DiskFacts) -> Variant:
    cell = Cell("none", "native" if layout.nova_native else None, False)
    why = "Nova 34: cache none, " + (
        "io native (preallocate_images=space or thick LVM)" if layout.nova_native else "no io"
    )
    problem = unsafety(cell, facts)
    return Variant("nova", cell, None, 1, problem is None, problem or why + ", 1 IOThread unbound")


def pick_variant(tuning: DiskTuning, iothreads: int, facts: DiskFacts) -> Variant:
    """The policy's decisions for the disk, as a variant."""

    def keyword(value: object) -> str | None:
        return value if isinstance(value, str) else None

    spread = bool(tuning.iothread_queues.value)
    cell = Cell(
        keyword(tuning.cache.value),
        keyword(tuning.io.value),
        tuning.iothread.value is not None or spread,
        spread,
    )
    queues = tuning.queues.value if isinstance(tuning.queues.value, int) else None
    threads = (
        ("iothread_queues", tuning.iothread_queues) if spread else ("iothread", tuning.iothread)
    )
    decisions = (("cache", tuning.cache), ("io", tuning.io), threads)
    why = "; ".join(f"{name}: {decision.reason}" for name, decision in decisions)
    # The policy never picks an unsafe cell unless the operator forces one.
    problem = unsafety(cell, facts)
    return Variant("pick", cell, queues, iothreads, problem is None, problem or why, tuning)


def cells(
    caches: Sequence[str] = CACHES, io_modes: Sequence[str] = IO_MODES, spread: bool = False
) -> list[Cell]:
    """Every cache x io x IOThread combination, legal or not, in a stable order.

    ``spread`` adds the per-queue cells (``+iotq``) after the others.
    """
    threads = [(False, False), (True, False)] + ([(True, True)] if spread else [])
    return [Cell(c, i, t, q) for t, q in threads for c in caches for i in io_modes]


def spread_problem(host: HostCaps, count: int, vcpus: int) -> str | None:
    """Why a run with ``count`` IOThreads cannot measure ``+iotq`` cells, or None."""
    if count < 2:
        return f"the run has {count} IOThread(s): ask for two or more with --iothreads"
    if vcpus < 2:
        return "one vCPU gives the disk one queue: nothing to spread"
    return iothreads.queue_mapping_unsupported(host)


def variants(
    layout: GuestLayout,
    facts: DiskFacts,
    pick: Variant,
    vcpus: int,
    wanted: Sequence[str] = ("*",),
    io_uring: bool = True,
    iothread_count: int = 1,
    no_spread: str | None = "the run has one IOThread",
) -> tuple[list[Variant], list[str]]:
    """The variants to measure for one layout, and notes on what was left out.

    ``wanted`` holds names or ``fnmatch`` patterns of variant names/labels. Cells
    QEMU would run the same way as a named variant are measured once, under the
    name. ``io_uring`` False leaves io_uring cells out (the host cannot run them).
    ``no_spread`` says why the per-queue cells (``+iotq``, over ``iothread_count``
    IOThreads) are left out (:func:`spread_problem`), noted when a pattern
    names them; None measures them.
    """
    named = {"defaults": defaults_variant(), "nova": nova_variant(layout, facts), "pick": pick}
    chosen = [v for name, v in named.items() if _wanted(name, wanted)]
    notes: list[str] = []
    taken = {_runs_as(v.cell, v.queues, vcpus): v.name for v in chosen}
    refused: list[str] = []
    for cell in cells(spread=True):
        if not _wanted(cell.label, wanted):
            continue
        same = taken.get(_runs_as(cell, vcpus, vcpus))
        if same is not None:
            continue  # measured as `same`
        if cell.spread and no_spread is not None:
            continue
        problem = legality(cell, facts)
        if problem is not None:
            refused.append(cell.label)
            continue
        if cell.io == "io_uring" and not io_uring:
            continue
        risk = unsafety(cell, facts)
        domain_iothreads = (iothread_count if cell.spread else 1) if cell.iothread else 0
        chosen.append(Variant(cell.label, cell, vcpus, domain_iothreads, risk is None, risk or ""))
        taken[_runs_as(cell, vcpus, vcpus)] = cell.label
    if refused:
        notes.append(f"{layout.name}: not measured, QEMU refuses them: {', '.join(refused)}")
    if not io_uring and any(_wanted(c.label, wanted) for c in cells() if c.io == "io_uring"):
        notes.append(f"{layout.name}: io_uring cells not measured: this host cannot use io_uring")
    # Noted when asked for by a pattern other than the full matrix's "*".
    narrow = [pattern for pattern in wanted if pattern != "*"]
    spread = [c.label for c in cells(spread=True) if c.spread]
    if no_spread is not None and any(_wanted(label, narrow) for label in spread):
        notes.append(f"{layout.name}: +iotq cells not measured: {no_spread}")
    return chosen, notes


def _runs_as(cell: Cell, queues: int | None, vcpus: int) -> tuple[object, ...]:
    """What QEMU runs for the disk: its cell and its queue count.

    No ``queues`` is QEMU's default, one per vCPU (virtio-blk-pci since 5.2),
    as the enumerated cells set; a pick with fewer (``disk_queues``) runs
    otherwise, and spreads fewer queues over its IOThreads.
    """
    return (*cell.effective(), queues or vcpus)


def _wanted(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
