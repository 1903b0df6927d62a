"""``bench guest --iothreads 2``: per-queue mapping measured beside one IOThread.

On libvirt >= 10.0 with QEMU >= 9.0 (the ``next`` stack of ``make e2e-next``)
the pick spreads the disk's 4 queues over both IOThreads and the ``+iot``
cell binds the disk to one; what QEMU got is read from its command line. On
older stacks (Debian 12's) the pick falls back to one IOThread and the run
says, in a note, why no ``+iotq`` cell was measured.
"""

from __future__ import annotations

import json
import subprocess

from tests.e2e.test_bench_guest import _root, bench_guest, kept_logs, short_path  # noqa: F401 (fixture)

# Two guests, one short job each: what is under test is QEMU's view, not a speed.
ARGS = (
    "--layouts", "raw-prealloc", "--variants", "pick", "none+native+iot*",
    "--jobs", "randread-4k-qd32", "--vcpus", "4", "--iothreads", "2", "--size", "256M",
    "--repeat", "1", "--runtime", "1", "--ramp", "0", "--no-host-bound", "--json",
    "--virt-type", "qemu",
)  # fmt: skip


def test_queues_spread_over_iothreads_where_the_stack_maps_them(short_path):  # noqa: F811
    proc = subprocess.run(
        bench_guest(short_path, *ARGS), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + kept_logs(short_path / "out")
    data = json.loads(proc.stdout)
    assert data["guest"]["iothreads"] == 2 and data["guest"]["vcpus"] == 4
    cells = {entry["variant"]: entry for entry in data["results"]}
    pick = cells["pick"]
    if data["guest"]["host"]["iothread_queue_mapping"]:
        # The pick: 4 queues over IOThreads 1 and 2, no single iothread.
        assert pick["label"] == "none+native+iotq" and pick["iothreads"] == 2, pick
        mapping = {m["iothread"]: m["vqs"] for m in pick["qemu"]["iothread-vq-mapping"]}
        assert mapping == {"iothread1": [0, 2], "iothread2": [1, 3]}, pick["qemu"]
        assert pick["qemu"]["iothread"] is None
        one = cells["none+native+iot"]
        assert one["iothreads"] == 1 and one["qemu"]["iothread"] == "iothread1", one
        assert "iothread-vq-mapping" not in one["qemu"]
        assert set(cells) == {"pick", "none+native+iot"}  # +iotq is the pick: measured once
    else:
        # One disk, no mapping: the pick is the one-IOThread cell, measured once.
        assert pick["label"] == "none+native+iot" and pick["qemu"]["iothread"] == "iothread1"
        assert set(cells) == {"pick"}
        said = (
            "guest: raw-prealloc: +iotq cells not measured: per-queue mapping needs libvirt >= 10.0"
        )
        assert any(note.startswith(said) for note in data["notes"]), data["notes"]
