"""Command lines built by QemuImg, checked without running qemu-img."""

from __future__ import annotations

import io
import json

import pytest
from oslo_concurrency import processutils

from nova_disk_tuning import exception
from nova_disk_tuning.images import qemu_img
from nova_disk_tuning.storage import pagecache
from nova_disk_tuning.storage.probe import StorageProbe

INFO_JSON = json.dumps({"virtual-size": 1073741824, "format": "qcow2", "filename": "x"})


class Recorder:
    """Stands in for processutils.execute / subprocess.Popen and records argv."""

    def __init__(self, version: str = "7.2.22", help_text: str = "extended_l2=<bool>") -> None:
        self.calls: list[tuple[list[str], dict]] = []
        self.version = version
        self.help_text = help_text
        self.fail: processutils.ProcessExecutionError | None = None
        self.popen_output = b"    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\r\n"
        self.popen_code = 0

    def execute(self, *argv: str, **kwargs):
        self.calls.append((list(argv), kwargs))
        if self.fail is not None:
            raise self.fail
        if argv[1] == "--version":
            return f"qemu-img version {self.version} (Debian)\n", ""
        if argv[1] == "info":
            return INFO_JSON, ""
        if "help" in argv:
            return self.help_text, ""
        return "", ""

    def popen(self, argv, **kwargs):
        self.calls.append((list(argv), kwargs))
        recorder = self

        class Child:
            stdout = io.BufferedReader(io.BytesIO(recorder.popen_output))

            def wait(self):
                return recorder.popen_code

        return Child()

    def argv(self, command: str) -> list[str]:
        matches = [argv for argv, _ in self.calls if argv[1] == command]
        assert matches, self.calls
        return matches[-1]


class Probe(StorageProbe):
    """The real probe, with O_DIRECT answered as the test says."""

    def __init__(self, direct: bool) -> None:
        super().__init__()
        self.direct = direct

    def supports_direct_io(self, path: str) -> bool:
        return self.direct


def make(conf, direct=True, **kwargs):
    recorder = Recorder(**kwargs)
    tool = qemu_img.QemuImg(
        conf, probe=Probe(direct), execute=recorder.execute, popen=recorder.popen
    )
    return tool, recorder


def test_info_argv_has_force_share_json_format_and_limits(make_conf, tmp_path):
    conf = make_conf(libvirt={"images_cpu_time_limit": 7, "images_address_space_limit": 3})
    image = tmp_path / "disk"
    image.write_bytes(b"x")
    tool, rec = make(conf)
    info = tool.info(str(image), "qcow2")
    argv, kwargs = rec.calls[-1]
    assert argv == ["qemu-img", "info", "--force-share", "--output=json", "-f", "qcow2", str(image)]
    assert kwargs["prlimit"].cpu_time == 7
    assert kwargs["prlimit"].address_space == 3 * 1024**3
    assert info.virtual_size == 1073741824


def test_info_limits_read_at_call_time(make_conf, tmp_path):
    conf = make_conf()
    image = tmp_path / "disk"
    image.write_bytes(b"x")
    tool, rec = make(conf)
    conf.set_override("images_cpu_time_limit", 3, group="libvirt")
    tool.info(str(image))
    argv, kwargs = rec.calls[-1]
    assert "-f" not in argv
    assert kwargs["prlimit"].cpu_time == 3


def test_info_missing_file(conf, tmp_path):
    tool, rec = make(conf)
    with pytest.raises(exception.ImageNotFound):
        tool.info(str(tmp_path / "absent"), "raw")
    assert rec.calls == []


@pytest.mark.parametrize(
    ("exit_code", "stderr"),
    [(-24, ""), (-9, ""), (1, "qemu-img: Failed to allocate memory: Cannot allocate memory")],
)
def test_info_limit_exceeded(conf, tmp_path, exit_code, stderr):
    image = tmp_path / "disk"
    image.write_bytes(b"x")
    tool, rec = make(conf)
    rec.fail = processutils.ProcessExecutionError(exit_code=exit_code, stderr=stderr)
    with pytest.raises(exception.ImageLimitExceeded) as caught:
        tool.info(str(image), "qcow2")
    assert "images_cpu_time_limit" in str(caught.value)


def test_info_garbage_output(conf, tmp_path):
    image = tmp_path / "disk"
    image.write_bytes(b"x")
    tool, rec = make(conf)
    rec.execute = lambda *a, **k: ("this is not json", "")
    tool._execute = rec.execute
    with pytest.raises(exception.QemuImgError, match="unparseable output"):
        tool.info(str(image), "qcow2")


def test_create_overlay_always_names_backing_format(conf, tmp_path):
    tool, rec = make(conf)
    result = tool.create(str(tmp_path / "o"), "qcow2", None, "/b/base", "raw", "none")
    assert rec.argv("create") == [
        "qemu-img",
        "create",
        "-f",
        "qcow2",
        "-b",
        "/b/base",
        "-F",
        "raw",
        str(tmp_path / "o"),
    ]
    assert result.preallocation == "none"
    with pytest.raises(exception.ImageError, match="backing_format"):
        tool.create(str(tmp_path / "p"), "qcow2", None, "/b/base", None, "none")


def test_create_performance_overlay_options(conf, tmp_path):
    tool, rec = make(conf)
    result = tool.create(str(tmp_path / "o"), "qcow2", 1 << 30, "/b/base", "raw", "performance")
    assert rec.argv("create") == [
        "qemu-img",
        "create",
        "-f",
        "qcow2",
        "-b",
        "/b/base",
        "-F",
        "raw",
        "-o",
        "extended_l2=on,cluster_size=128k,preallocation=falloc",
        str(tmp_path / "o"),
        str(1 << 30),
    ]
    assert result.preallocation == "performance"


def test_create_performance_falls_back_to_space_without_extended_l2(conf, tmp_path, monkeypatch):
    tool, rec = make(conf, help_text="cluster_size=<size>\npreallocation=<str>")
    done = []
    monkeypatch.setattr(tool, "_preallocate", lambda *args: done.append(args) or True)
    result = tool.create(str(tmp_path / "o"), "qcow2", 1 << 30, "/b/base", "raw", "performance")
    assert result.preallocation == "space"
    assert "extended_l2" in result.reason
    assert "-o" not in rec.argv("create")
    assert done  # space: fallocate after create


def test_create_standalone_qcow2_performance(conf, tmp_path):
    tool, rec = make(conf)
    tool.create(str(tmp_path / "q"), "qcow2", 4096, preallocation="performance")
    assert rec.argv("create")[-4:] == ["-o", "preallocation=falloc", str(tmp_path / "q"), "4096"]


def test_create_preallocation_defaults_to_config(make_conf, tmp_path):
    conf = make_conf(DEFAULT={"preallocate_images": "performance"})
    tool, _rec = make(conf)
    assert tool.create(str(tmp_path / "q"), "qcow2", 4096).requested == "performance"


def test_resize_always_has_format(conf):
    tool, _rec = make(conf)
    assert tool.resize("/d/disk", 2 << 30, "raw") == [
        "qemu-img",
        "resize",
        "-f",
        "raw",
        "/d/disk",
        str(2 << 30),
    ]
    with pytest.raises(exception.ImageError):
        tool.resize("/d/disk", 1, "")


@pytest.fixture
def cold_sources(monkeypatch):
    """Sources read as not in the page cache: convert_source_cache=auto picks O_DIRECT."""
    monkeypatch.setattr(pagecache, "cached_fraction", lambda path: 0.0)


@pytest.mark.parametrize(("direct", "cache"), [(True, "none"), (False, "writeback")])
def test_convert_target_cache_follows_direct_io(conf, tmp_path, direct, cache, cold_sources):
    src = tmp_path / "src"
    src.write_bytes(b"x")
    tool, rec = make(conf, direct=direct)
    result = tool.convert(str(src), str(tmp_path / "dst"), "qcow2", "raw")
    argv = rec.argv("convert")
    assert argv[argv.index("-t") + 1] == cache == result.target_cache
    expected_source_cache = "none" if direct else "writeback"
    assert argv[argv.index("-T") + 1] == expected_source_cache
    assert "unsafe" not in argv and "writethrough" not in argv


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(1.0, "writeback"), (0.5, "writeback"), (0.49, "none"), (None, "none")],
)
def test_auto_source_cache_follows_the_page_cache(conf, tmp_path, monkeypatch, fraction, expected):
    monkeypatch.setattr(pagecache, "cached_fraction", lambda path: fraction)
    src = tmp_path / "src"
    src.write_bytes(b"x")
    tool, rec = make(conf)
    result = tool.convert(str(src), str(tmp_path / "dst"), "qcow2", "raw")
    argv = rec.argv("convert")
    assert argv[argv.index("-T") + 1] == expected == result.source_cache
    assert any("page cache" in reason or "unknown" in reason for reason in result.reasons)


def test_explicit_source_cache_ignores_the_page_cache(make_conf, tmp_path, monkeypatch):
    monkeypatch.setattr(pagecache, "cached_fraction", lambda path: 1.0)
    conf = make_conf(disk_tuning={"convert_source_cache": "none"})
    src = tmp_path / "src"
    src.write_bytes(b"x")
    tool, rec = make(conf)
    tool.convert(str(src), str(tmp_path / "dst"), "qcow2", "raw")
    argv = rec.argv("convert")
    assert argv[argv.index("-T") + 1] == "none"


def test_convert_raw_target_argv(conf, tmp_path, cold_sources):
    src = tmp_path / "src"
    src.write_bytes(b"x")
    dst = tmp_path / "dst"
    tool, rec = make(conf)
    progress = []
    result = tool.convert(str(src), str(dst), "qcow2", "raw", progress=progress.append)
    assert rec.argv("convert") == [
        "qemu-img",
        "convert",
        "-t",
        "none",
        "-T",
        "none",
        "-O",
        "raw",
        "-m",
        "8",
        "-W",
        "-p",
        "-n",
        "--target-is-zero",
        # A qcow2 source is read with its backing file switched off.
        'json:{"backing": null, "driver": "qcow2", "file": {"driver": "file", "filename": "'
        + str(src)
        + '"}}',
        str(dst),
    ]
    assert result.command == rec.argv("convert")
    assert result.target_is_zero
    assert dst.stat().st_size == 1073741824  # made here at the virtual size, sparse
    assert progress == [0.0, 50.0, 100.0, 100.0]


def test_convert_qcow2_target_argv_and_options(make_conf, tmp_path):
    conf = make_conf(
        disk_tuning={
            "convert_source_cache": "writeback",
            "convert_coroutines": 16,
            "convert_target_is_zero": False,
        }
    )
    src = tmp_path / "src"
    src.write_bytes(b"x")
    tool, rec = make(conf)
    tool.convert(str(src), str(tmp_path / "dst"), "raw", "qcow2")
    assert rec.argv("convert") == [
        "qemu-img",
        "convert",
        "-t",
        "none",
        "-T",
        "writeback",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-m",
        "16",
        str(src),
        str(tmp_path / "dst"),
    ]


def test_convert_qcow2_target_created_first(conf, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x")
    tool, rec = make(conf)
    tool.convert(str(src), str(tmp_path / "dst"), "raw", "qcow2")
    create = rec.argv("create")
    assert create[:4] == ["qemu-img", "create", "-f", "qcow2"]
    assert create[-1] == "1073741824"
    assert rec.argv("convert")[-4:] == ["-n", "--target-is-zero", str(src), str(tmp_path / "dst")]


def test_convert_old_qemu_img_has_no_target_is_zero(conf, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x")
    tool, rec = make(conf, version="4.2.1")
    tool.convert(str(src), str(tmp_path / "dst"), "qcow2", "raw")
    assert "--target-is-zero" not in rec.argv("convert")
    assert "-n" not in rec.argv("convert")


def test_convert_failure_removes_the_target_it_created(conf, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x")
    dst = tmp_path / "dst"
    tool, rec = make(conf)
    rec.popen_output = b"qemu-img: error while writing at byte 0: No space left on device\n"
    rec.popen_code = 1
    with pytest.raises(exception.InsufficientStorage):
        tool.convert(str(src), str(dst), "qcow2", "raw")
    assert not dst.exists()
    rec.popen_output = b"qemu-img: Could not open: Image is not in qcow2 format\n"
    with pytest.raises(exception.QemuImgError, match="not in qcow2 format"):
        tool.convert(str(src), str(dst), "qcow2", "raw")
    assert not dst.exists()


def test_parse_progress():
    assert qemu_img.parse_progress(b"    (1.00/100%)\r    (12.34/100%)\rjunk") == [1.0, 12.34]


def test_version_cached(conf):
    tool, rec = make(conf)
    assert tool.version() == (7, 2, 22)
    assert tool.version() == (7, 2, 22)
    assert len([c for c in rec.calls if c[0][1] == "--version"]) == 1


def test_qemu_img_runs_with_the_callers_path_and_the_c_locale(conf, tmp_path, monkeypatch):
    """processutils passes env_variables as the whole environment: PATH must survive."""
    monkeypatch.setenv("PATH", "/opt/qemu/bin:/usr/bin")
    image = tmp_path / "disk"
    image.write_bytes(b"x")
    tool, rec = make(conf)
    tool.info(str(image), "raw")
    env = rec.calls[-1][1]["env_variables"]
    assert env["PATH"] == "/opt/qemu/bin:/usr/bin"
    assert env["LC_ALL"] == "C"
