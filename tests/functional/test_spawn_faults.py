"""Spawns killed at the worst moments, and spawns racing each other, on real storage.

Every kill waits for a marker on disk (a file appearing, the record listing a
disk), never for a sleep. After SIGTERM the spawn undoes itself; after
SIGKILL ``list`` shows what was left (``building, process gone``), ``destroy``
removes all of it, and the same spawn then succeeds with a root disk whose
content equals the image (``qemu-img compare``).
"""

from __future__ import annotations

import concurrent.futures
import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nova_disk_tuning.common import staging
from tests.functional.conftest import MiB, requires_root

pytestmark = [requires_root, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[2]
UUID = "7d6c5b4a-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
DATA_MIB = 160


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """A qcow2 of random data: copying it takes long enough to be caught mid-way."""
    directory = tmp_path_factory.mktemp("faults-image")
    raw, qcow2 = directory / "data.raw", directory / "data.qcow2"
    with open(raw, "wb") as handle:
        for _ in range(DATA_MIB):
            handle.write(os.urandom(MiB))
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True
    )
    raw.unlink()
    return str(qcow2)


def write_conf(root: Path, mode: str, images_type: str = "flat") -> Path:
    path = root / f"nova-{mode}-{images_type}.conf"
    path.write_text(
        f"[DEFAULT]\ninstances_path = {root / 'instances'}\npreallocate_images = {mode}\n"
        f"[libvirt]\nconnection_uri = test:///default\nvirt_type = qemu\n"
        f"images_type = {images_type}\n"
    )
    return path


def cli_argv(config: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", str(config), *argv]


def cli(config: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(config, *argv), capture_output=True, text=True, timeout=300)


def spawn_argv(config: Path, name: str, image: str, uuid: str = UUID) -> list[str]:
    return cli_argv(
        config, "spawn", name, "--image", image, "--uuid", uuid, "--ephemeral-gb", "1", "--json"
    )


def wait_for(marker: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while not marker():
        if proc.poll() is not None:
            pytest.fail(f"the spawn ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def record(root: Path) -> dict | None:
    try:
        return json.loads((root / "instances" / UUID / "instance.json").read_text())
    except (OSError, ValueError):
        return None


# The markers: each names a moment of the spawn.
MARKERS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "fetching": (
        "the base image being fetched or converted",
        lambda root: bool(glob.glob(str(root / "instances" / "_base" / f".*{staging.MARK}*"))),
    ),
    "root-disk": (
        "the root disk file appearing",
        lambda root: (root / "instances" / UUID / "disk").exists(),
    ),
    "root-recorded": (
        "the record listing the root disk",
        lambda root: bool((record(root) or {}).get("disks")),
    ),
}


def listed(config: Path) -> list[dict]:
    result = cli(config, "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def leftovers(root: Path) -> list[str]:
    """Everything under instances_path but the cache entries and lock files."""
    found = []
    for path in sorted((root / "instances").rglob("*")):
        rel = path.relative_to(root / "instances")
        if rel.parts[0] == "locks" or (rel.parts[0] == "_base" and len(rel.parts) == 1):
            continue
        if rel.parts[0] == "_base" and not any(staging.is_stage(part) for part in rel.parts):
            continue  # a finished cache entry is the cache's, not a leftover
        found.append(str(rel))
    return found


def assert_root_is_the_image(root: Path, image: str) -> None:
    data = record(root)
    assert data is not None and data.get("state", "created") == "created"
    disk = next(d for d in data["disks"] if d["kind"] == "root")
    compare = subprocess.run(
        ["qemu-img", "compare", "-q", image, disk["path"]], capture_output=True, text=True
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr


# The fetch does not depend on the preallocation mode: one mode there.
POINTS = [("fetching", "space")] + [
    (point, mode)
    for point in ("root-disk", "root-recorded")
    for mode in ("none", "space", "performance")
]


@pytest.mark.parametrize(("point", "mode"), POINTS, ids=[f"{p}-{m}" for p, m in POINTS])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill9", "term"])
def test_killed_spawn(tmp_path, image, mode, point, sig):
    config = write_conf(tmp_path, mode)
    what, marker = MARKERS[point]
    if point != "fetching":
        # A warm cache, so the kill lands in disk creation.
        warm = cli(config, "spawn", "warm", "--image", image)
        assert warm.returncode == 0, warm.stderr
        assert cli(config, "destroy", "warm").returncode == 0
    proc = subprocess.Popen(
        spawn_argv(config, "victim", image), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(lambda: marker(tmp_path), proc, what)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert "Traceback" not in err, err

    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "terminated" in err
        assert listed(config) == []
        assert leftovers(tmp_path) == []
    else:
        (row,) = listed(config)
        assert (row["name"], row["state"]) == ("victim", "building, process gone")
        destroyed = cli(config, "destroy", "victim")
        assert destroyed.returncode == 0, destroyed.stderr
        assert listed(config) == []
        assert [p for p in leftovers(tmp_path) if not p.startswith("_base")] == []

    again = subprocess.run(spawn_argv(config, "victim", image), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert_root_is_the_image(tmp_path, image)
    assert not [p for p in leftovers(tmp_path) if p.startswith("_base")]


def test_racing_spawns_of_one_name(tmp_path, image):
    config = write_conf(tmp_path, "space", "qcow2")
    uuids = [f"0000000{i}-1111-4222-8333-444455556666" for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(
                lambda uuid: subprocess.run(
                    spawn_argv(config, "same", image, uuid), capture_output=True, text=True
                ),
                uuids,
            )
        )
    winners = [r for r in runs if r.returncode == 0]
    assert len(winners) == 1, [r.stderr for r in runs]
    for loser in runs:
        if loser.returncode != 0:
            assert "Traceback" not in loser.stderr
            assert "already exists" in loser.stderr, loser.stderr
    (row,) = listed(config)
    assert row["state"] == "shutoff" and row["uuid"] == json.loads(winners[0].stdout)["uuid"]
    # The losers made nothing: only the winner's directory is there.
    dirs = [p.name for p in (tmp_path / "instances").iterdir() if p.name not in ("_base", "locks")]
    assert dirs == [row["uuid"]]


def test_racing_destroys_of_one_name(tmp_path, image):
    config = write_conf(tmp_path, "none", "qcow2")
    assert cli(config, "spawn", "doomed", "--image", image).returncode == 0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: cli(config, "destroy", "doomed"), range(4)))
    assert sum(r.returncode == 0 for r in runs) == 1, [r.stderr for r in runs]
    for run in runs:
        assert "Traceback" not in run.stderr
        if run.returncode != 0:
            assert "not found" in run.stderr, run.stderr
    assert listed(config) == []
    dirs = [p.name for p in (tmp_path / "instances").iterdir() if p.name not in ("_base", "locks")]
    assert dirs == []


def test_prune_racing_spawns(tmp_path, image):
    """`cache prune --max-age 0` while spawns run: no spawn fails for it."""
    config = write_conf(tmp_path, "space", "flat")
    names = [f"p{i}" for i in range(3)]
    procs = [
        subprocess.Popen(
            cli_argv(config, "spawn", name, "--image", image),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    prunes = []
    while any(p.poll() is None for p in procs):
        prunes.append(cli(config, "cache", "prune", "--max-age", "0"))
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err
    for prune in prunes:
        assert prune.returncode == 0 and "Traceback" not in prune.stderr, prune.stderr
    assert sorted(r["name"] for r in listed(config)) == names
    for name in names:
        disks = json.loads(cli(config, "show", name, "--json").stdout)["disks"]
        root = next(d for d in disks if d["kind"] == "root")
        compare = subprocess.run(["qemu-img", "compare", "-q", image, root["path"]])
        assert compare.returncode == 0


def test_one_corrupt_instance_does_not_hide_the_others(tmp_path, image):
    config = write_conf(tmp_path, "none", "qcow2")
    for name in ("good", "bad"):
        assert cli(config, "spawn", name, "--image", image).returncode == 0
    bad = next(r for r in listed(config) if r["name"] == "bad")
    # A new process: the test driver defines both again from libvirt.xml.
    (tmp_path / "instances" / bad["uuid"] / "libvirt.xml").write_text("<domain><name>")
    rows = {r["name"]: r for r in listed(config)}
    assert rows["good"]["state"] == "shutoff"
    state = rows["bad"]["state"]
    assert state.startswith("error: ") and f"{bad['uuid']}/libvirt.xml" in state
    table = cli(config, "list")
    assert table.returncode == 0 and "Traceback" not in table.stderr
    # A corrupt record is listed under its uuid, and destroy removes it.
    (tmp_path / "instances" / bad["uuid"] / "instance.json").write_text("{")
    rows = {r["name"]: r for r in listed(config)}
    assert rows[bad["uuid"]]["state"] == "broken"
    assert cli(config, "destroy", bad["uuid"]).returncode == 0
    assert [r["name"] for r in listed(config)] == ["good"]


def test_instances_path_on_a_read_only_file_system(tmp_path, image):
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], check=True)
    try:
        config = tmp_path / "nova.conf"
        config.write_text(
            f"[DEFAULT]\ninstances_path = {mount}\n[libvirt]\nconnection_uri = test:///default\n"
        )
        run = cli(config, "spawn", "vm", "--image", image)
        assert run.returncode == 1 and "Traceback" not in run.stderr
        (line,) = [ln for ln in run.stderr.splitlines() if ln.strip()]
        assert "instances_path" in line and str(mount) in line and "read-only" in line
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_destroy_by_name_and_by_uuid_at_once(tmp_path, image):
    config = write_conf(tmp_path, "none", "qcow2")
    spawned = cli(config, "spawn", "twice", "--image", image, "--json")
    uuid = json.loads(spawned.stdout)["uuid"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda who: cli(config, "destroy", who), ["twice", uuid]))
    assert sorted(r.returncode for r in runs) == [0, 1], [r.stderr for r in runs]
    loser = next(r for r in runs if r.returncode)
    assert "not found" in loser.stderr and "Traceback" not in loser.stderr
    assert listed(config) == []


def test_a_uuid_selects_its_instance_before_a_name(tmp_path, image):
    config = write_conf(tmp_path, "none", "qcow2")
    first = json.loads(cli(config, "spawn", "first", "--image", image, "--json").stdout)
    # A name equal to another instance's uuid is refused, so the two cannot be confused.
    clash = cli(config, "spawn", first["uuid"], "--image", image)
    assert clash.returncode == 1 and "is a UUID" in clash.stderr
    assert cli(config, "destroy", first["uuid"]).returncode == 0
    assert listed(config) == []


@pytest.mark.parametrize(
    ("second_name", "lock"),
    [("victim", "instance victim"), ("other", "the cache entry")],
    ids=["same-name", "same-image"],
)
def test_a_stopped_lock_holder_is_named_and_the_wait_ends(tmp_path, image, second_name, lock):
    """SIGSTOP a spawn while it fetches: the next spawn names it, then gives up."""
    config = write_conf(tmp_path, "none")
    with open(config, "a") as handle:
        handle.write("[disk_tuning]\nlock_wait_timeout = 3\n")
    what, marker = MARKERS["fetching"]
    holder = subprocess.Popen(
        spawn_argv(config, "victim", image), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: marker(tmp_path), holder, what)
        holder.send_signal(signal.SIGSTOP)
        waiter = cli(config, "spawn", second_name, "--image", image)
        assert waiter.returncode == 1, waiter.stderr
        assert "Traceback" not in waiter.stderr
        line = waiter.stderr.strip().splitlines()[-1]
        assert f"Gave up after 3 s waiting for {lock}" in line, line
        assert f"process {holder.pid} (" in line and f"kill -CONT {holder.pid}" in line, line
    finally:
        holder.send_signal(signal.SIGCONT)
    _, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err.decode()
    # The holder finished; the same spawn goes through now (the name is taken if it was the same).
    if second_name != "victim":
        again = cli(config, "spawn", second_name, "--image", image)
        assert again.returncode == 0, again.stderr
