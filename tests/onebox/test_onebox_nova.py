"""The drop-in inside a running Nova: real processes, a real guest, the whole life cycle.

One run of the one-box (:mod:`nova_disk_tuning_bench.onebox`): MariaDB,
RabbitMQ, placement, glance, nova-api/conductor/scheduler and two
nova-computes (Nova's own driver and the drop-in), each on a private libvirtd
with QEMU under TCG, and a server on each taken through boot, hard reboot,
stop/start, live snapshot, same-host resize, shelve/unshelve, rescue and delete.

Stand-ins, named: no Keystone (the API trusts the identity headers, placement
takes an admin token); Neutron is a loopback stand-in answering empty lists
(the servers have no network); privsep helpers run directly as root.
"""

from __future__ import annotations

import os

from nova_disk_tuning_bench.onebox import procs, report

from tests.onebox.conftest import processes_naming


def _first_boot_disks(run, name):
    return {d.target: d for d in run.outcomes[name].boots[0].disks}


def test_every_boot_wrote_and_read_back_both_disks_and_lost_nothing(onebox):
    for name, outcome in onebox.outcomes.items():
        steps = [b.step for b in outcome.boots]
        assert steps == ["boot", "hard reboot", "start", "resize", "unshelve", "rescue", "unrescue"]
        assert outcome.problems == [], name
        for boot in outcome.boots:
            if boot.step != "rescue":
                assert boot.report.results == {"vda": "ok", "vdb": "ok"}, (name, boot.step)


def test_the_drop_in_tunes_what_qemu_runs_and_nova_does_not(onebox):
    dropin = _first_boot_disks(onebox, "dropin")
    nova = _first_boot_disks(onebox, "nova")
    for target in ("vda", "vdb"):
        # performance preallocation: qcow2 overlays preallocated, so native AIO is safe.
        assert {k: dropin[target].driver.get(k) for k in ("type", "cache", "io")} == {
            "type": "qcow2", "cache": "none", "io": "native",
        }  # fmt: skip
        assert (dropin[target].aio, dropin[target].cache_direct) == ("native", True)
        assert dropin[target].iothread == f"iothread{dropin[target].driver['iothread']}"
        assert nova[target].iothread is None and "iothread" not in nova[target].driver
        why = report.reasons(onebox.outcomes["dropin"], target)
        assert "cache=none (" in why and "io=native (" in why, why


def test_resize_replans_the_iothreads_from_the_new_flavor(onebox):
    threads = {b.step: b.iothreads for b in onebox.outcomes["dropin"].boots}
    assert (threads["boot"], threads["resize"]) == ("2", "1")
    assert onebox.outcomes["nova"].boots[0].iothreads == "1"


def test_the_live_snapshot_holds_what_the_guest_wrote(onebox):
    for name, outcome in onebox.outcomes.items():
        assert outcome.snapshot_pattern_ok is True, name


def test_nothing_is_left_in_instances_path_after_delete(onebox):
    for name, outcome in onebox.outcomes.items():
        assert outcome.leftovers == [], name
        assert not (outcome.compute.instances / outcome.server_id).exists()


def test_no_service_logged_a_warning_or_traceback(onebox):
    assert onebox.unexpected == []


def test_stopping_the_box_ended_every_process_it_started(onebox):
    assert procs.reap(onebox.box.workdir) == []
    assert processes_naming(onebox.box.workdir) == []
    for daemon in onebox.box.daemons.values():
        assert not os.path.exists(daemon.socket)
