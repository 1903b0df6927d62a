"""The wheels: the shim in Nova's namespace and nothing else there; no benchmarks on compute nodes.

Built with pip from this checkout (what ``pip install nova-disk-tuning``
does), then installed into a scratch virtualenv beside stand-ins of Nova's
files and uninstalled again: the
shim arrives at ``nova/virt/disk_tuning/__init__.py`` and leaves with the
package; no file of Nova's (``nova/__init__.py``, ``nova/virt/__init__.py``)
is shipped, so none is overwritten or removed.
"""

import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _build(tmp_path_factory, source: pathlib.Path, pattern: str) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob(pattern)
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return _build(tmp_path_factory, ROOT, "nova_disk_tuning-*.whl")


@pytest.fixture(scope="module")
def bench_wheel(tmp_path_factory):
    return _build(tmp_path_factory, ROOT / "bench", "nova_disk_tuning_bench-*.whl")


def _metadata(wheel: pathlib.Path, name: str) -> str:
    archive = zipfile.ZipFile(wheel)
    (path,) = [n for n in archive.namelist() if n.endswith(f".dist-info/{name}")]
    return archive.read(path).decode()


def test_the_plugin_wheel_has_no_benchmark_code(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.startswith("nova_disk_tuning/")], names
    assert not [n for n in names if "bench" in n.split("/")[0] or "/bench/" in n], names
    metadata = _metadata(wheel, "METADATA")
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if "matplotlib" in r]
    # The [bench] extra is what adds them: the benchmarks' own distribution.
    assert [r for r in requires if "nova-disk-tuning-bench" in r and 'extra == "bench"' in r]


def test_the_bench_wheel_carries_the_benchmarks_and_their_command(bench_wheel):
    names = zipfile.ZipFile(bench_wheel).namelist()
    assert "nova_disk_tuning_bench/cli.py" in names
    assert "nova_disk_tuning_bench/guest/run.py" in names
    assert not [n for n in names if n.startswith("nova_disk_tuning/")]
    entry_points = _metadata(bench_wheel, "entry_points.txt")
    assert "[nova_disk_tuning.commands]" in entry_points
    assert "bench = nova_disk_tuning_bench.cli" in entry_points
    requires = _metadata(bench_wheel, "METADATA")
    assert "Requires-Dist: nova-disk-tuning" in requires and "matplotlib" in requires


def test_wheel_ships_the_shim_and_no_file_of_novas(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    under_nova = sorted(n for n in names if n.startswith("nova/"))
    assert under_nova == ["nova/virt/disk_tuning/__init__.py"]


def test_install_and_uninstall_leave_novas_files_alone(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = pathlib.Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Nova's own files, as an installed Nova has them.
    (site / "nova" / "virt").mkdir(parents=True)
    novas = ("nova/__init__.py", "nova/virt/__init__.py")
    for name in novas:
        (site / name).write_text("# Nova's\n")
    pip = [python, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--no-deps", str(wheel)], check=True, capture_output=True)
    shim = site / "nova" / "virt" / "disk_tuning" / "__init__.py"
    assert "nova_disk_tuning.nova.driver" in shim.read_text()
    subprocess.run([*pip, "uninstall", "-y", "nova-disk-tuning"], check=True, capture_output=True)
    assert not shim.exists()
    for name in novas:
        assert (site / name).read_text() == "# Nova's\n"
