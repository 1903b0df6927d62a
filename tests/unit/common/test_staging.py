"""common/staging.py on a real directory: stage names, locks, publishing, sweeping."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys

import pytest

from nova_disk_tuning.common import files, staging
from nova_disk_tuning.common.files import flock_held

HEX = "0123456789abcdef"


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_stage_names_are_hidden_beside_the_final_name_and_match_only_ours(tmp_path):
    final = str(tmp_path / "out.raw")
    assert staging.stage_prefix(final) == ".out.raw.ndt-stage-"
    assert staging.is_stage_of(final, f".out.raw.ndt-stage-{HEX}")
    assert staging.is_stage(f".out.raw.ndt-stage-{HEX}")
    for name in (
        f".out.raw.ndt-stage-{HEX}x",  # longer suffix
        ".out.raw.ndt-stage-0123",  # shorter suffix
        f".out.raw.ndt-stage-{HEX.upper()}",
        f".other.raw.ndt-stage-{HEX}",  # another final name's
        f".out.raw.ndt-stage-{HEX}.ndt-stage-{HEX}",  # of "out.raw.ndt-stage-<hex>"
        "out.raw",
    ):
        assert not staging.is_stage_of(final, name), name


def test_a_long_final_name_still_gives_a_valid_stage_name(tmp_path):
    final = str(tmp_path / ("d" * 250))
    with staging.Stage(final) as stage:
        assert len(os.path.basename(stage.staging_dir)) <= 255
        assert staging.is_stage_of(final, os.path.basename(stage.staging_dir))
        with open(stage.path, "wb") as handle:
            handle.write(b"x")
        stage.publish()
    assert listing(tmp_path) == ["d" * 250]


def test_a_file_stage_is_locked_and_published_whole(tmp_path):
    final = str(tmp_path / "out.raw")
    with staging.Stage(final) as stage:
        assert os.path.dirname(stage.staging_dir) == str(tmp_path)
        assert os.path.dirname(stage.path) == stage.staging_dir
        assert flock_held(os.path.join(stage.staging_dir, staging.LOCK))
        with open(stage.path, "wb") as handle:
            handle.write(b"image")
        stage.publish()
        assert stage.published
        # The stage is gone the moment the file is published.
        assert listing(tmp_path) == ["out.raw"]
    with open(final, "rb") as handle:
        assert handle.read() == b"image"


def test_a_scratch_file_can_be_published_instead(tmp_path):
    final = str(tmp_path / "base")
    with staging.Stage(final) as stage:
        with open(stage.path, "wb") as handle:
            handle.write(b"fetched")
        converted = stage.scratch("raw")
        with open(converted, "wb") as handle:
            handle.write(b"converted")
        stage.publish(source=converted)
    assert (tmp_path / "base").read_bytes() == b"converted"
    assert listing(tmp_path) == ["base"]
    with pytest.raises(ValueError):
        staging.Stage(final).scratch("x")  # not open
    with staging.Stage(final) as stage:
        for bad in ("../x", staging.LOCK, "", "a/b"):
            with pytest.raises(ValueError):
                stage.scratch(bad)


def test_leaving_the_block_unpublished_removes_only_the_stage(tmp_path):
    final = str(tmp_path / "out.raw")
    (tmp_path / "keep").write_bytes(b"k")
    with pytest.raises(RuntimeError), staging.Stage(final) as stage:
        with open(stage.path, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("conversion failed")
    assert listing(tmp_path) == ["keep"]


@pytest.mark.parametrize("kind", ["file", "dangling symlink", "directory"])
def test_what_appeared_at_the_final_name_is_never_replaced(tmp_path, kind):
    final = tmp_path / "out.raw"
    with staging.Stage(str(final)) as stage:
        with open(stage.path, "wb") as handle:
            handle.write(b"ours")
        if kind == "file":
            final.write_bytes(b"theirs")
        elif kind == "directory":
            final.mkdir()
        else:
            os.symlink(tmp_path / "missing", final)
        with pytest.raises(FileExistsError):
            stage.publish()
        assert not stage.published
    assert listing(tmp_path) == ["out.raw"]
    if kind == "file":
        assert final.read_bytes() == b"theirs"


def test_replace_publishes_over_what_is_there(tmp_path):
    final = tmp_path / "instance.json"
    final.write_text("old")
    staging.write_atomic(str(final), "new")
    assert final.read_text() == "new"
    assert listing(tmp_path) == ["instance.json"]


def test_without_renameat2_a_file_is_published_by_link(tmp_path, monkeypatch):
    """NFS and older FUSE file systems refuse RENAME_NOREPLACE with EINVAL."""

    monkeypatch.setattr(files, "_renameat2", lambda: None)
    final = tmp_path / "out.raw"
    with staging.Stage(str(final)) as stage:
        with open(stage.path, "wb") as handle:
            handle.write(b"ours")
        stage.publish()
    assert final.read_bytes() == b"ours" and listing(tmp_path) == ["out.raw"]
    with staging.Stage(str(final)) as stage:
        with open(stage.path, "wb") as handle:
            handle.write(b"second")
        with pytest.raises(FileExistsError):
            stage.publish()
    assert final.read_bytes() == b"ours"


def test_a_directory_stage_becomes_the_final_directory_and_keeps_its_lock(tmp_path):
    final = tmp_path / "uuid"
    stage = staging.Stage(str(final), directory=True).open()
    try:
        (tmp_path / os.path.basename(stage.path) / "instance.json").write_text("{}")
        stage.publish()
        assert stage.path == str(final)
        assert listing(final) == [staging.LOCK, "instance.json"]
        assert flock_held(str(final / staging.LOCK))
        # A sweep never takes a published directory for a stage.
        assert staging.sweep(str(tmp_path)) == []
    finally:
        stage.close()
    assert not flock_held(str(final / staging.LOCK))
    assert listing(final) == [staging.LOCK, "instance.json"]


def test_sweep_removes_abandoned_stages_only(tmp_path):
    final = str(tmp_path / "out.raw")
    abandoned = tmp_path / f".out.raw.ndt-stage-{HEX}"
    abandoned.mkdir()
    (abandoned / staging.LOCK).write_bytes(b"")
    (abandoned / "out.raw").write_bytes(b"left by a killed run")
    never_locked = tmp_path / f".out.raw.ndt-stage-{'c' * 16}"
    never_locked.mkdir()  # killed between mkdir and the lock file
    live = tmp_path / f".out.raw.ndt-stage-{'f' * 16}"
    live.mkdir()
    (live / staging.LOCK).write_bytes(b"")
    user_file = tmp_path / "user.img"
    user_file.write_bytes(b"precious")
    os.symlink(user_file, tmp_path / f".out.raw.ndt-stage-{'e' * 16}")
    with_dir = tmp_path / f".out.raw.ndt-stage-{'d' * 16}"
    (with_dir / "mnt").mkdir(parents=True)
    (with_dir / "mnt" / "data").write_bytes(b"never walked into")
    others = [f".other.raw.ndt-stage-{HEX}", ".out.raw.ndt-stage-notours", "out.raw.part"]
    for name in others:
        (tmp_path / name).write_bytes(b"not ours to remove")
    holder = os.open(live / staging.LOCK, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert sorted(staging.sweep(str(tmp_path), final)) == sorted(
            [str(abandoned), str(never_locked)]
        )
        assert (live / staging.LOCK).exists()
    finally:
        os.close(holder)
    assert user_file.read_bytes() == b"precious"
    assert (with_dir / "mnt" / "data").read_bytes() == b"never walked into"
    for name in others:
        assert (tmp_path / name).exists()
    # Its owner gone, the formerly live one is abandoned too.
    assert staging.sweep(str(tmp_path), final) == [str(live)]


def test_a_killed_owner_leaves_a_stage_the_next_run_removes(tmp_path):
    final = str(tmp_path / "out.raw")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from nova_disk_tuning.common import staging\n"
            f"stage = staging.Stage({final!r}).open()\n"
            "open(stage.path, 'wb').write(b'half')\n"
            "print(stage.staging_dir, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        left = child.stdout.readline().strip()  # the progress marker: staged and locked
        assert os.path.isdir(left)
        assert staging.sweep(str(tmp_path), final) == []  # alive: kept
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert os.path.isdir(left)  # SIGKILL ran no clean-up...
    with staging.Stage(final):  # ...the next stage of the same name sweeps it
        assert not os.path.exists(left)
    assert listing(tmp_path) == []


def test_two_stages_of_one_name_are_independent(tmp_path):
    final = str(tmp_path / "out.raw")
    with staging.Stage(final) as first, staging.Stage(final) as second:
        assert first.staging_dir != second.staging_dir
        for stage in (first, second):
            with open(stage.path, "wb") as handle:
                handle.write(b"x")
        first.publish()
        with pytest.raises(FileExistsError):
            second.publish()
    assert listing(tmp_path) == ["out.raw"]


@pytest.mark.parametrize("where", ["mkdir", "lock file", "flock"])
def test_an_interrupted_stage_leaves_nothing(tmp_path, monkeypatch, where):
    """Ctrl-C and SIGTERM arrive as exceptions between any two bytecodes."""
    real_mkdir, real_open = os.mkdir, os.open
    leaked: list[int] = []

    def mkdir_then_interrupted(path, mode=0o777):
        real_mkdir(path, mode)
        raise KeyboardInterrupt

    def open_then_interrupted(path, flags, mode=0o777, **kwargs):
        fd = real_open(path, flags, mode, **kwargs)
        if os.path.basename(path) == staging.LOCK:
            leaked.append(fd)  # the fd never reaches the Stage
            raise KeyboardInterrupt
        return fd

    def interrupted_flock(fd, operation):
        raise KeyboardInterrupt

    if where == "mkdir":
        monkeypatch.setattr(staging.os, "mkdir", mkdir_then_interrupted)
    elif where == "lock file":
        monkeypatch.setattr(staging.os, "open", open_then_interrupted)
    else:
        monkeypatch.setattr(staging.fcntl, "flock", interrupted_flock)
    try:
        with pytest.raises(KeyboardInterrupt), staging.Stage(str(tmp_path / "out.raw")):
            pytest.fail("the block must not run")
    finally:
        monkeypatch.undo()
        for fd in leaked:
            os.close(fd)
    # Nothing left, or only what the next run's sweep removes.
    staging.sweep(str(tmp_path))
    assert listing(tmp_path) == []


def test_no_hard_links_and_no_renameat2_is_said(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files, "_renameat2", lambda: None)
    monkeypatch.setattr(staging.os, "link", no_links)
    with staging.Stage(str(tmp_path / "out.raw")) as stage:
        open(stage.path, "wb").close()
        with pytest.raises(OSError) as err:
            stage.publish()
        assert err.value.errno == errno.EOPNOTSUPP
    assert listing(tmp_path) == []


def test_a_stage_swapped_for_a_symlink_under_the_sweep_removes_nothing_else(tmp_path, monkeypatch):
    """Another user of a shared directory swaps the stage for a link to a victim's files."""
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("a", "b", staging.LOCK):
        (victim / name).write_bytes(b"theirs")
    stage = tmp_path / f".out.raw{staging.MARK}{HEX}"
    stage.mkdir()
    (stage / staging.LOCK).write_bytes(b"")
    (stage / "out.raw").write_bytes(b"abandoned")
    real_open_at = staging._open_at

    def open_then_swapped(parent_fd, name):
        fd = real_open_at(parent_fd, name)
        os.rename(stage, str(stage) + ".moved")
        os.symlink(victim, stage)
        return fd

    monkeypatch.setattr(staging, "_open_at", open_then_swapped)
    assert staging.sweep(str(tmp_path)) == []
    assert sorted(os.listdir(victim)) == sorted(["a", "b", staging.LOCK])
    assert os.path.islink(stage)
    # What was removed was the abandoned stage's own content, by its descriptor.
    assert os.listdir(str(stage) + ".moved") == []


def test_a_stage_holding_a_directory_is_left_whole(tmp_path):
    stage = tmp_path / f".out.raw{staging.MARK}{HEX}"
    (stage / "mnt").mkdir(parents=True)
    (stage / staging.LOCK).write_bytes(b"")
    (stage / "out.raw").write_bytes(b"x")
    assert staging.sweep(str(tmp_path)) == []
    assert sorted(os.listdir(stage)) == sorted([staging.LOCK, "mnt", "out.raw"])


def test_opening_a_stage_twice_is_refused(tmp_path):
    stage = staging.Stage(str(tmp_path / "x")).open()
    try:
        with pytest.raises(RuntimeError, match="open already"):
            stage.open()
    finally:
        stage.close()
    assert listing(tmp_path) == []


def test_a_sweep_that_saw_no_lock_file_never_empties_the_stage(tmp_path, monkeypatch):
    # The maker creates its lock file between the sweep's look and its removal:
    # the stage has contents, so it is live and stays.
    stage = tmp_path / (staging.stage_prefix("disk.raw") + "0123456789abcdef")
    stage.mkdir()
    (stage / staging.LOCK).write_text("")
    monkeypatch.setattr(staging, "_open_lock", lambda stage_fd: None)
    assert staging.sweep(str(tmp_path)) == []
    assert (stage / staging.LOCK).exists()
    # An empty one is a maker that died before its lock file: it goes.
    (stage / staging.LOCK).unlink()
    assert staging.sweep(str(tmp_path)) == [str(stage)]
    assert not stage.exists()
