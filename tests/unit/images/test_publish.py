"""publish.py on a real directory: temporary names, locks, sweeping, publishing."""

from __future__ import annotations

import fcntl
import os

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.common.files import flock_held
from nova_disk_tuning.images import publish

HEX = "0123456789abcdef"


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_temp_names_are_hidden_beside_the_destination_and_match_only_ours(tmp_path):
    dst = str(tmp_path / "out.raw")
    assert publish.temp_prefix(dst) == ".out.raw.ndt-convert-"
    assert publish.is_temp_of(dst, f".out.raw.ndt-convert-{HEX}")
    for name in (
        f".out.raw.ndt-convert-{HEX}x",  # longer suffix
        ".out.raw.ndt-convert-0123",  # shorter suffix
        f".out.raw.ndt-convert-{HEX.upper()}",
        f".other.raw.ndt-convert-{HEX}",  # another destination's
        f".out.raw.ndt-convert-{HEX}.ndt-convert-{HEX}",  # of "out.raw.ndt-convert-<hex>"
        "out.raw",
    ):
        assert not publish.is_temp_of(dst, name), name


def test_a_long_destination_name_still_gives_a_valid_temp_name(tmp_path):
    dst = str(tmp_path / ("d" * 250))
    with publish.StagedFile(dst) as staged:
        assert len(os.path.basename(staged.path)) <= 255
        assert publish.is_temp_of(dst, os.path.basename(staged.path))
        staged.publish()
    assert listing(tmp_path) == ["d" * 250]


def test_check_destination_refuses_what_cannot_be_published(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    cases = {
        "file": "the destination exists",
        "dangling": "dangling symlink",
        "nope/out.raw": f"the directory {tmp_path / 'nope'} does not exist; create it first",
        "file/out.raw": f"{tmp_path / 'file'} is not a directory",
        "newdir/": "must name a file",
    }
    for name, message in cases.items():
        with pytest.raises(exception.ImageError, match=message):
            publish.check_destination(str(tmp_path / name) + ("/" if name.endswith("/") else ""))
    publish.check_destination(str(tmp_path / "free.raw"))
    assert os.path.islink(tmp_path / "dangling")
    assert listing(tmp_path) == ["dangling", "file"]


def test_staged_file_is_locked_and_published_by_link(tmp_path):
    dst = str(tmp_path / "out.raw")
    with publish.StagedFile(dst) as staged:
        assert os.path.dirname(staged.path) == str(tmp_path)
        assert publish.is_temp_of(dst, os.path.basename(staged.path))
        assert flock_held(staged.path)
        with open(staged.path, "wb") as handle:
            handle.write(b"image")
        staged.publish()
        assert staged.published
        assert listing(tmp_path) == ["out.raw"]
    with open(dst, "rb") as handle:
        assert handle.read() == b"image"
    assert listing(tmp_path) == ["out.raw"]


def test_leaving_the_block_unpublished_removes_only_the_temp(tmp_path):
    dst = str(tmp_path / "out.raw")
    (tmp_path / "keep").write_bytes(b"k")
    with pytest.raises(RuntimeError), publish.StagedFile(dst):
        raise RuntimeError("conversion failed")
    assert listing(tmp_path) == ["keep"]


@pytest.mark.parametrize("kind", ["file", "dangling symlink"])
def test_a_destination_that_appeared_is_never_replaced(tmp_path, kind):
    dst = tmp_path / "out.raw"
    with publish.StagedFile(str(dst)) as staged:
        with open(staged.path, "wb") as handle:
            handle.write(b"ours")
        if kind == "file":
            dst.write_bytes(b"theirs")
        else:
            os.symlink(tmp_path / "missing", dst)
        with pytest.raises(exception.ImageError, match="appeared while converting"):
            staged.publish()
        assert not staged.published
    assert listing(tmp_path) == ["out.raw"]
    if kind == "file":
        assert dst.read_bytes() == b"theirs"
    else:
        assert os.path.islink(dst) and not (tmp_path / "missing").exists()


def test_sweep_removes_abandoned_temps_only(tmp_path):
    dst = str(tmp_path / "out.raw")
    abandoned = tmp_path / f".out.raw.ndt-convert-{HEX}"
    abandoned.write_bytes(b"left by a killed run")
    live = tmp_path / f".out.raw.ndt-convert-{'f' * 16}"
    live.write_bytes(b"being converted")
    user_file = tmp_path / "user.img"
    user_file.write_bytes(b"precious")
    os.symlink(user_file, tmp_path / f".out.raw.ndt-convert-{'e' * 16}")
    os.mkdir(tmp_path / f".out.raw.ndt-convert-{'d' * 16}")
    others = [f".other.raw.ndt-convert-{HEX}", ".out.raw.ndt-convert-notours", "out.raw.part"]
    for name in others:
        (tmp_path / name).write_bytes(b"not ours to remove")
    holder = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert publish.sweep_stale(dst) == [str(abandoned)]
    finally:
        os.close(holder)
    assert listing(tmp_path) == sorted(
        [
            live.name,
            "user.img",
            f".out.raw.ndt-convert-{'e' * 16}",
            f".out.raw.ndt-convert-{'d' * 16}",
            *others,
        ]
    )
    assert user_file.read_bytes() == b"precious"
    # Its owner gone, the formerly live one is abandoned too.
    assert publish.sweep_stale(dst) == [str(live)]


def test_staging_sweeps_first_but_spares_a_concurrent_staging(tmp_path):
    dst = str(tmp_path / "out.raw")
    abandoned = tmp_path / f".out.raw.ndt-convert-{HEX}"
    abandoned.write_bytes(b"")
    with publish.StagedFile(dst) as first, publish.StagedFile(dst) as second:
        assert not abandoned.exists()
        assert first.path != second.path
        assert os.path.exists(first.path) and os.path.exists(second.path)
        first.publish()
        with pytest.raises(exception.ImageError, match="appeared while converting"):
            second.publish()
    assert listing(tmp_path) == ["out.raw"]


@pytest.mark.parametrize("where", ["after the open returned", "while locking"])
def test_an_interrupted_staging_leaves_nothing(tmp_path, monkeypatch, where):
    """Ctrl-C and SIGTERM arrive as exceptions between any two bytecodes."""
    leaked: list[int] = []
    real_open = os.open

    def open_then_interrupted(path, flags, mode=0o777):
        fd = real_open(path, flags, mode)
        if os.path.basename(path).startswith(".out.raw.ndt-convert-"):
            leaked.append(fd)  # the fd never reaches StagedFile
            raise KeyboardInterrupt
        return fd

    def interrupted_flock(fd, operation):
        raise KeyboardInterrupt

    if where == "after the open returned":
        monkeypatch.setattr(publish.os, "open", open_then_interrupted)
    else:
        monkeypatch.setattr(publish.fcntl, "flock", interrupted_flock)
    try:
        with pytest.raises(KeyboardInterrupt), publish.StagedFile(str(tmp_path / "out.raw")):
            pytest.fail("the block must not run")
    finally:
        monkeypatch.undo()
        for fd in leaked:
            os.close(fd)
    assert listing(tmp_path) == []
