"""Ctrl-C while the one-box runs: everything it started stops, nothing is left running.

``python -m nova_disk_tuning_bench.onebox`` is started as an operator would;
once it prints that the box is up (the progress marker), it gets SIGINT in the
middle of its first server's life cycle.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nova_disk_tuning_bench.onebox import procs

from tests.onebox.conftest import processes_naming


def test_ctrl_c_stops_every_service_and_guest_of_the_box():
    if os.geteuid() != 0:
        pytest.skip("the one-box runs QEMU, libvirtd and Nova's privileged helpers as root")
    workdir = Path("/var/tmp") / f"ndt-onebox-int-{os.getpid()}"
    box = subprocess.Popen(
        [sys.executable, "-m", "nova_disk_tuning_bench.onebox", "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    try:
        assert box.stdout is not None
        first = box.stdout.readline()  # blocks until the box is up or has failed
        assert first.startswith("one-box up:"), first + box.stderr.read() if box.stderr else ""
        # Into the first life cycle: a server is being built or already runs.
        deadline = time.monotonic() + 120
        while not any((workdir / "instances-nova").glob("*-*-*-*-*")):
            assert time.monotonic() < deadline, "no server was built"
            time.sleep(0.2)
        box.send_signal(signal.SIGINT)
        _, err = box.communicate(timeout=180)
    finally:
        if box.poll() is None:
            box.kill()
            box.wait()
    assert box.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: everything the one-box started is stopped"
    assert procs.reap(workdir) == []
    # Nor a libvirtd, virtlogd or QEMU of the box: their command lines name its directory.
    assert processes_naming(workdir) == []
    shutil.rmtree(workdir)
