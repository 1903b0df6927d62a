"""The base-image cache with real images, real processes and real faults."""

from __future__ import annotations

import fcntl
import hashlib
import multiprocessing
import os
import signal
import time

import pytest

from nova_disk_tuning import conf as ndt_conf
from nova_disk_tuning import exception
from nova_disk_tuning.common import staging
from nova_disk_tuning.images.cache import ImageCache
from nova_disk_tuning.images.fetch import LocalFileFetcher
from nova_disk_tuning.images.qemu_img import QemuImg
from tests.functional.images.conftest import MiB, compare, run, write_random

IMAGE_ID = "8a3c0e0b-5e3f-4b6c-9d43-0d2b6c1f7a10"
CTX = multiprocessing.get_context("fork")


def cache_files(cache: ImageCache) -> list[str]:
    base = cache.base_dir
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


class CountingQemuImg(QemuImg):
    """The real QemuImg; each conversion also appends a line to a marker file."""

    def __init__(self, conf, marker: str) -> None:
        super().__init__(conf)
        self.marker = marker

    def convert(self, *args, **kwargs):
        with open(self.marker, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return super().convert(*args, **kwargs)


class SlowFetcher(LocalFileFetcher):
    """A local copy that reports when it started and then takes its time."""

    def __init__(self, started: str) -> None:
        self.started = started

    def fetch(self, source, dest, progress=None):
        open(self.started, "w").close()
        time.sleep(60)
        return super().fetch(source, dest, progress)


def _conf(instances: str, **default):
    return ndt_conf.new_conf(overrides={"DEFAULT": {"instances_path": instances, **default}})


def _fetch_worker(instances, source, marker, queue) -> None:
    conf = _conf(instances)
    cache = ImageCache(conf, qemu_img=CountingQemuImg(conf, marker))
    got = cache.fetch(IMAGE_ID, source, "qcow2")
    queue.put((got.path, got.created, got.format))


def _slow_fetch_worker(instances, source, started) -> None:
    cache = ImageCache(_conf(instances), fetchers={"slow": SlowFetcher(started)})
    cache.fetch(IMAGE_ID, "slow://" + source, "qcow2")


def _killed_in_conversion_worker(instances, source, halfway) -> None:
    def progress(percent: float) -> None:
        # Fetch is 0-50 %, conversion 50-100 %: 75 is half of the conversion.
        if percent >= 75.0:
            open(halfway, "w").close()
            time.sleep(60)

    ImageCache(_conf(instances)).fetch(IMAGE_ID, source, "qcow2", progress=progress)


def _wait_for(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.fixture
def killer():
    started: list[multiprocessing.Process] = []

    def start(target, *args) -> multiprocessing.Process:
        proc = CTX.Process(target=target, args=args)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.is_alive():
            proc.kill()
        proc.join(10)


def test_fetch_converts_once_and_reuses(conf, qcow2_image, raw_image):
    cache = ImageCache(conf)
    first = cache.fetch(IMAGE_ID, qcow2_image, "qcow2")
    assert first.created and first.format == "raw" and first.virtual_size == 32 * MiB
    assert first.conversion is not None and "--target-is-zero" in first.conversion.command
    expected = os.path.join(
        conf.instances_path, "_base", hashlib.sha1(IMAGE_ID.encode()).hexdigest()
    )
    assert first.path == expected
    assert compare(first.path, "raw", raw_image, "raw").returncode == 0
    again = cache.fetch(IMAGE_ID, "file://" + qcow2_image, "qcow2")
    assert (again.path, again.created, again.format) == (first.path, False, "raw")
    [entry] = cache.list()
    assert (entry.image_id, entry.format, entry.virtual_size) == (IMAGE_ID, "raw", 32 * MiB)


def test_keeps_format_without_force_raw(make_conf, qcow2_image):
    cache = ImageCache(make_conf(DEFAULT={"force_raw_images": False}))
    got = cache.fetch(IMAGE_ID, qcow2_image, "qcow2")
    assert got.format == "qcow2" and got.conversion is None
    assert compare(got.path, "qcow2", qcow2_image, "qcow2").returncode == 0


def test_prune_removes_unused_keeps_used(conf, tmp_path, qcow2_image, raw_image):
    cache = ImageCache(conf)
    used = cache.fetch("used", qcow2_image, "qcow2")
    unused = cache.fetch("unused", raw_image, "raw")
    listed = cache.fetch("listed", raw_image, "raw")
    instance = os.path.join(conf.instances_path, "0b1c2d3e")
    os.makedirs(instance)
    QemuImg(conf).create(os.path.join(instance, "disk"), "qcow2", None, used.path, "raw")
    assert cache.prune(max_age=3600) == []  # all recently used
    removed = cache.prune(max_age=0, in_use={listed.path})
    assert removed == [unused.path]
    assert os.path.exists(used.path) and os.path.exists(listed.path)
    assert not os.path.exists(unused.path + ".info")


def test_eight_processes_convert_once(conf, tmp_path, qcow2_image, raw_image):
    marker = str(tmp_path / "conversions")
    queue = CTX.Queue()
    procs = [
        CTX.Process(target=_fetch_worker, args=(conf.instances_path, qcow2_image, marker, queue))
        for _ in range(8)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    with open(marker) as handle:
        assert len(handle.read().split()) == 1  # exactly one conversion ran
    assert sum(created for _, created, _ in results) == 1
    assert {(path, fmt) for path, _, fmt in results} == {
        (ImageCache(conf).entry_path(IMAGE_ID), "raw")
    }
    assert compare(results[0][0], "raw", raw_image, "raw").returncode == 0


def test_killed_during_fetch_next_request_rebuilds(conf, tmp_path, killer, qcow2_image, raw_image):
    started = str(tmp_path / "started")
    proc = killer(_slow_fetch_worker, conf.instances_path, qcow2_image, started)
    _wait_for(started)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    cache = ImageCache(conf)
    assert not os.path.exists(cache.entry_path(IMAGE_ID))
    # The lock died with its holder: the next request must not wait for it.
    queue = CTX.Queue()
    marker = str(tmp_path / "conversions")
    again = killer(_fetch_worker, conf.instances_path, qcow2_image, marker, queue)
    path, created, _ = queue.get(timeout=60)
    again.join(10)
    assert created and compare(path, "raw", raw_image, "raw").returncode == 0
    assert cache_files(cache) == sorted([os.path.basename(path), os.path.basename(path) + ".info"])


def test_killed_halfway_through_conversion(conf, tmp_path, killer, raw_image):
    source = str(tmp_path / "bigger.qcow2")
    bigger = str(tmp_path / "bigger.raw")
    write_random(bigger, 256 * MiB)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", bigger, source)
    halfway = str(tmp_path / "halfway")
    proc = killer(_killed_in_conversion_worker, conf.instances_path, source, halfway)
    _wait_for(halfway)
    cache = ImageCache(conf)
    name = os.path.basename(cache.entry_path(IMAGE_ID))
    stages = [f for f in cache_files(cache) if staging.is_stage_of(name, f)]
    assert stages and "raw" in os.listdir(os.path.join(cache.base_dir, stages[0]))
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert not os.path.exists(cache.entry_path(IMAGE_ID))
    got = cache.fetch(IMAGE_ID, source, "qcow2")
    assert got.created
    assert compare(got.path, "raw", bigger, "raw").returncode == 0
    assert cache_files(cache) == [name, name + ".info"]  # stale temp files are gone


def test_full_file_system_leaves_nothing(make_conf, small_filesystem, tmp_path):
    raw = str(tmp_path / "big.raw")
    source = str(tmp_path / "big.qcow2")
    write_random(raw, 10 * MiB)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, source)
    conf = make_conf(DEFAULT={"instances_path": small_filesystem.path})
    cache = ImageCache(conf)
    # 10 MiB fetched + 10 MiB converted do not fit in 16 MiB.
    with pytest.raises(exception.InsufficientStorage):
        cache.fetch(IMAGE_ID, source, "qcow2")
    assert cache_files(cache) == []


def _qcow2_with_backing(path: str, backing: str) -> None:
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", path, "1M")


HOSTILE = {
    # name: (how to make it, declared format, words in the error)
    "raw-hiding-qcow2-backing": (
        lambda p, d: _qcow2_with_backing(p, "/etc/hostname"),
        "raw",
        "declared raw but its content is qcow2, and it has a backing file",
    ),
    "qcow2-data-file": (
        lambda p, d: run(
            "qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={d}/host.raw", p, "1M"
        ),
        "qcow2",
        "external data-file",
    ),
    "format-mismatch": (
        lambda p, d: run("qemu-img", "create", "-q", "-f", "vdi", p, "1M"),
        "qcow2",
        "declared qcow2 but its content is vdi",
    ),
    "vmdk-flat": (
        lambda p, d: run(
            "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", p, "1M"
        ),
        "vmdk",
        "create-type 'monolithicflat' is not allowed",
    ),
    "qcow2-huge": (
        lambda p, d: run("qemu-img", "create", "-q", "-f", "qcow2", p, "1T"),
        "qcow2",
        "larger than the allowed 1073741824 bytes",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_images_rejected_and_not_cached(conf, tmp_path, name):
    make, declared, words = HOSTILE[name]
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    source = str(source_dir / "image")
    make(source, str(source_dir))
    cache = ImageCache(conf)
    with pytest.raises(exception.ImageUnacceptable) as caught:
        cache.fetch(IMAGE_ID, source, declared, max_virtual_size=1 << 30)
    assert words in str(caught.value)
    assert cache_files(cache) == []


def test_relative_instances_path_is_refused(make_conf, monkeypatch, tmp_path):
    """Entries become backing file names, and instances would land wherever a command runs."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exception.InvalidConfig, match="must be an absolute directory path"):
        make_conf(DEFAULT={"instances_path": "relative/instances"})
    assert not (tmp_path / "relative").exists()


@pytest.mark.timeout(60)
def test_prune_is_not_stopped_by_a_fifo_in_an_instance_directory(make_conf, tmp_path):
    """Instance directories may hold FIFOs (a console pipe): prune must not block on one."""
    conf = make_conf(DEFAULT={"instances_path": str(tmp_path / "instances")})
    foreign = tmp_path / "instances" / "0a1b2c3d-0000-4000-8000-000000000000"
    foreign.mkdir(parents=True)
    os.mkfifo(foreign / "console.pipe")
    assert ImageCache(conf).prune(max_age=0) == []


def test_prune_removes_partial_fetches_whose_lock_nobody_holds(make_conf, tmp_path):
    """A killed fetch leaves its stage; prune removes it once nobody holds its lock.

    Releases before the stages left ``<entry>.<pid>.part`` and
    ``<entry>.info.<pid>.tmp``: removed under the entry's lock. Files of the
    cache directory that are not ours stay.
    """
    conf = make_conf(DEFAULT={"instances_path": str(tmp_path / "instances")})
    cache = ImageCache(conf)
    os.makedirs(cache.base_dir)
    entry = os.path.join(cache.base_dir, "ab" * 20)
    abandoned, running = (
        os.path.join(cache.base_dir, f"{staging.stage_prefix(entry)}{c * 16}") for c in "ab"
    )
    for stage in (abandoned, running):
        os.mkdir(stage)
        for name in (staging.LOCK, os.path.basename(entry)):
            with open(os.path.join(stage, name), "wb") as handle:
                handle.write(b"x" * 4096)
    legacy, legacy_record = f"{entry}.12345.part", f"{entry}.info.12345.tmp"
    foreign = os.path.join(cache.base_dir, "notes.1.part")
    for path in (legacy, legacy_record, foreign):
        with open(path, "wb") as handle:
            handle.write(b"x" * 4096)
    holder = os.open(os.path.join(running, staging.LOCK), os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # this test plays the live fetch
        assert sorted(cache.prune(max_age=0)) == sorted([abandoned, legacy, legacy_record])
    finally:
        os.close(holder)
    assert not any(os.path.exists(p) for p in (abandoned, legacy, legacy_record))
    assert os.path.exists(running) and os.path.exists(foreign)


def test_prune_removes_records_whose_image_is_gone_but_not_one_being_built(make_conf, tmp_path):
    conf = make_conf(DEFAULT={"instances_path": str(tmp_path / "instances")})
    cache = ImageCache(conf)
    os.makedirs(cache.base_dir)
    gone, building = (os.path.join(cache.base_dir, c * 40) for c in "ab")
    for entry in (gone, building):
        with open(f"{entry}.info", "w") as handle:
            handle.write('{"format": "raw", "virtual_size": 1}')
    holder = multiprocessing.get_context("fork").Process(
        target=_hold_entry_lock, args=(conf.instances_path, building, tmp_path / "held")
    )
    holder.start()
    try:
        _wait_for(str(tmp_path / "held"))
        assert cache.prune(max_age=0) == [f"{gone}.info"]
        assert os.path.exists(f"{building}.info")
    finally:
        holder.terminate()
        holder.join(10)
    assert cache.prune(max_age=0) == [f"{building}.info"]  # its builder is gone


def _hold_entry_lock(instances_path: str, entry: str, marker) -> None:
    from nova_disk_tuning.common import locks

    with locks.external_lock(f"image-{os.path.basename(entry)}", f"{instances_path}/locks"):
        marker.write_text("held")
        time.sleep(600)


# A cached base is what was checked, or it is checked and built again -------------


def test_truncated_base_is_rebuilt_not_reused(conf, qcow2_image, raw_image):
    cache = ImageCache(conf)
    first = cache.fetch(IMAGE_ID, qcow2_image, "qcow2")
    os.truncate(first.path, 8 * MiB)  # zeroes past the cut, were it reused

    again = cache.fetch(IMAGE_ID, qcow2_image, "qcow2")

    assert again.created and again.path == first.path
    assert compare(again.path, "raw", raw_image, "raw").returncode == 0


def test_cached_qcow2_given_a_backing_file_is_rebuilt(make_conf, tmp_path, qcow2_image):
    cache = ImageCache(make_conf(DEFAULT={"force_raw_images": False}))
    first = cache.fetch(IMAGE_ID, qcow2_image, "qcow2")
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"host file content\n" * 1000)
    # The entry rewritten in place to read a host file, its mtime restored.
    times = os.stat(first.path)
    run("qemu-img", "rebase", "-u", "-b", str(secret), "-F", "raw", first.path)
    os.utime(first.path, ns=(times.st_atime_ns, times.st_mtime_ns))

    again = cache.fetch(IMAGE_ID, qcow2_image, "qcow2")

    assert again.created
    info = run("qemu-img", "info", "--output=json", "-U", again.path)
    assert "backing-filename" not in info
    assert compare(again.path, "qcow2", qcow2_image, "qcow2").returncode == 0


def test_reuse_keeps_the_recorded_identity_current(conf, qcow2_image):
    cache = ImageCache(conf)
    first = cache.fetch(IMAGE_ID, qcow2_image, "qcow2")
    for _ in range(3):  # each reuse touches the base (a new ctime) and re-records it
        assert not cache.fetch(IMAGE_ID, qcow2_image, "qcow2").created
    assert cache.fetch(IMAGE_ID, qcow2_image, "qcow2").path == first.path
