"""The wheel puts the compute_driver shim inside Nova's namespace, and nothing else there.

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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("nova_disk_tuning-*.whl")
    return path


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
