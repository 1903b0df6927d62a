"""bench guest: which cells are measured, legal and safe (the rules are safety.py's)."""

from __future__ import annotations

import pytest
from nova_disk_tuning_bench.guest import matrix

from nova_disk_tuning.policy import safety
from nova_disk_tuning.policy.decide import tune_guest
from nova_disk_tuning.policy.facts import DiskFacts, HostCaps

HOST = HostCaps((9, 0, 0), (7, 2, 0), True)
GiB = 1 << 30
LAYOUT = {layout.name: layout for layout in matrix.LAYOUTS}


def _facts(allocated: int = GiB, direct_io: bool = True, **kwargs) -> DiskFacts:
    kwargs.setdefault("source_type", "file")
    kwargs.setdefault("path", "/x/disk.eph0")
    return DiskFacts(name="vda", size=GiB, allocated=allocated, direct_io=direct_io, **kwargs)


def _pick(conf, facts: DiskFacts, vcpus: int = 2) -> matrix.Variant:
    tuning = tune_guest([facts], HOST, conf, vcpus)
    return matrix.pick_variant(tuning.disk("vda"), tuning.iothreads.thread_count, facts)


def _by_name(variants):
    return {v.name: v for v in variants}


def test_full_matrix_of_a_preallocated_raw_disk(conf):
    facts = _facts()
    pick = _pick(conf, facts)
    assert pick.cell == matrix.Cell("none", "native", True) and pick.queues == 2
    variants, notes = matrix.variants(LAYOUT["raw-prealloc"], facts, pick, vcpus=2)
    names = [v.name for v in variants]
    assert names[:3] == ["defaults", "nova", "pick"]
    # Cells QEMU runs like a named variant are measured once, under the name.
    assert "writeback+threads" not in names  # = defaults
    assert "none+native" not in names  # = nova (cache none, io native: space)
    assert "none+native+iot" not in names  # = pick
    # native needs an O_DIRECT cache: QEMU refuses the rest, and the note says so.
    assert "writeback+native" not in names and "writethrough+native+iot" not in names
    assert notes == [
        "raw-prealloc: not measured, QEMU refuses them: writeback+native, writethrough+native, "
        "writeback+native+iot, writethrough+native+iot"
    ]
    # 4 caches x 3 io x 2 IOThread = 24; 4 refused, 3 the same as a named variant.
    assert len(variants) == 24 - 4 - 3 + 3
    assert all(v.safe for v in variants)
    cells = _by_name(variants)
    assert cells["directsync+io_uring+iot"].domain_iothreads == 1
    assert cells["directsync+io_uring+iot"].queues == 2
    assert cells["none+threads"].domain_iothreads == 0


def test_named_variants_render_what_nova_and_libvirt_would():
    facts = _facts()
    defaults = matrix.defaults_variant()
    assert defaults.cell == matrix.Cell(None, None, False) and defaults.domain_iothreads == 0
    assert defaults.queues is None
    nova = matrix.nova_variant(LAYOUT["raw-prealloc"], facts)
    assert nova.cell == matrix.Cell("none", "native", False) and nova.domain_iothreads == 1
    # Nova sets native from preallocate_images=space only; LVM: thick volumes.
    assert matrix.nova_variant(LAYOUT["raw-sparse"], facts).cell.io is None
    assert matrix.nova_variant(LAYOUT["qcow2-overlay-performance"], facts).cell.io is None
    assert matrix.nova_variant(LAYOUT["qcow2-overlay-space"], facts).cell.io == "native"
    assert matrix.nova_variant(LAYOUT["lvm"], facts).cell.io == "native"


def test_sparse_disk_native_is_measured_but_flagged_unsafe(conf):
    facts = _facts(allocated=0)
    pick = _pick(conf, facts)
    assert pick.cell == matrix.Cell("none", "threads", True) and pick.safe
    variants, _ = matrix.variants(LAYOUT["raw-sparse"], facts, pick, vcpus=2)
    cells = _by_name(variants)
    assert not cells["none+native"].safe
    assert "not fully allocated" in cells["none+native"].why
    assert cells["none+io_uring"].safe and cells["none+io_uring+iot"].safe
    assert "none+threads+iot" not in cells  # measured as the pick
    # Nova sets no io on a sparse layout, so its cell is none+threads, measured as "nova".
    assert "none+threads" not in cells and cells["nova"].safe


def test_no_o_direct_makes_direct_caches_illegal(conf):
    facts = _facts(direct_io=False)
    variants, notes = matrix.variants(
        LAYOUT["raw-prealloc"], facts, _pick(conf, facts), vcpus=2, wanted=("*+*",)
    )
    assert {v.cell.cache for v in variants} == {"writeback", "writethrough"}
    assert "none+threads" in notes[0] and "directsync+io_uring+iot" in notes[0]


def test_legality_is_asked_of_safety(conf, monkeypatch):
    facts = _facts()
    calls = []

    def refuse_io_uring(io, cache):
        calls.append((io, cache))
        return "refused" if io == "io_uring" else None

    monkeypatch.setattr(safety, "native_without_direct_cache", refuse_io_uring)
    variants, notes = matrix.variants(LAYOUT["raw-prealloc"], facts, _pick(conf, facts), 2)
    assert calls and not any(v.cell.io == "io_uring" for v in variants)
    assert "none+io_uring" in notes[0]


def test_io_uring_on_lvm_is_unsafe_and_io_uring_can_be_left_out(conf):
    facts = _facts(source_type="block", path="/dev/vg/lv", storage_kind="lvm")
    variants, _ = matrix.variants(LAYOUT["lvm"], facts, _pick(conf, facts), 2)
    assert not _by_name(variants)["none+io_uring"].safe
    variants, notes = matrix.variants(LAYOUT["lvm"], facts, _pick(conf, facts), 2, io_uring=False)
    assert not any(v.cell.io == "io_uring" for v in variants)
    assert "io_uring cells not measured" in notes[-1]


@pytest.mark.parametrize(
    ("wanted", "names"),
    [
        (matrix.QUICK_VARIANTS, ["defaults", "pick"]),
        (("nova", "none+io_uring*"), ["nova", "none+io_uring", "none+io_uring+iot"]),
        (("pick", "none+native+iot"), ["pick"]),  # the same cell: measured as pick
    ],
)
def test_selection_by_name_and_pattern(conf, wanted, names):
    facts = _facts()
    variants, _ = matrix.variants(LAYOUT["raw-prealloc"], facts, _pick(conf, facts), 2, wanted)
    assert [v.name for v in variants] == names


def test_labels():
    assert matrix.Cell("none", "native", True).label == "none+native+iot"
    assert matrix.Cell(None, None, False).label == "default+default"
    assert matrix.Cell(None, None, False).effective() == ("writeback", "threads", False, False)
    assert matrix.Cell("none", "native", True, spread=True).label == "none+native+iotq"


NEXT = HostCaps((11, 3, 0), (10, 0, 2), True)


def test_pick_with_per_queue_mapping_is_its_own_cell(conf):
    """With two IOThreads on a host that maps queues, the pick is +iotq, not +iot."""
    facts = _facts()
    tuning = tune_guest([facts], NEXT, conf, 4, {"hw:disk_iothreads": "2"})
    pick = matrix.pick_variant(tuning.disk("vda"), tuning.iothreads.thread_count, facts)
    assert pick.cell == matrix.Cell("none", "native", True, spread=True)
    assert pick.domain_iothreads == 2 and pick.queues == 4
    assert "spread over 2 IOThreads" in pick.why
    variants, notes = matrix.variants(
        LAYOUT["raw-prealloc"], facts, pick, 4, ("pick", "none+native+iot*"), True, 2, None
    )
    # One IOThread for the disk is measured beside the pick, not folded into it.
    assert [v.name for v in variants] == ["pick", "none+native+iot"]
    assert _by_name(variants)["none+native+iot"].domain_iothreads == 1
    assert not notes


def test_spread_cells_only_where_the_run_can_map_queues(conf):
    facts = _facts()
    pick = _pick(conf, facts)
    wanted = ("none+threads+iot*",)
    variants, notes = matrix.variants(LAYOUT["raw-prealloc"], facts, pick, 4, wanted, True, 3, None)
    spread = _by_name(variants)["none+threads+iotq"]
    assert spread.domain_iothreads == 3 and spread.queues == 4 and spread.cell.spread
    problem = matrix.spread_problem(HOST, 2, 4)
    assert problem is not None and "libvirt >= 10.0" in problem and "QEMU >= 9.0" in problem
    variants, notes = matrix.variants(
        LAYOUT["raw-prealloc"], facts, pick, 4, wanted, True, 2, problem
    )
    assert [v.name for v in variants] == ["none+threads+iot"]
    assert notes == [f"raw-prealloc: +iotq cells not measured: {problem}"]
    assert "--iothreads" in (matrix.spread_problem(NEXT, 1, 4) or "")
    assert "one vCPU" in (matrix.spread_problem(NEXT, 2, 1) or "")
    assert matrix.spread_problem(NEXT, 2, 4) is None
    # The full matrix leaves them out without a note unless a pattern names them.
    _, notes = matrix.variants(LAYOUT["raw-prealloc"], facts, pick, 4)
    assert not any("iotq" in note for note in notes)


def test_a_pick_with_fewer_queues_is_not_taken_for_the_same_cell(conf):
    """disk_queues=1 on 2 vCPUs: the pick's none+native+iot runs one queue, the cell two."""
    facts = _facts()
    wanted = ("pick", "none+native+iot")
    layout = LAYOUT["raw-prealloc"]
    variants, _ = matrix.variants(layout, facts, _pick(conf, facts), 2, wanted)
    assert [v.name for v in variants] == ["pick"]  # QEMU's default: a queue per vCPU
    conf.set_override("disk_queues", 1, group="disk_tuning")
    pick = _pick(conf, facts)
    assert pick.queues == 1 and pick.cell.label == "none+native+iot"
    variants, _ = matrix.variants(layout, facts, pick, 2, wanted)
    assert [(v.name, v.queues) for v in variants] == [("pick", 1), ("none+native+iot", 2)]
