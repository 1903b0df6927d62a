"""The DevStack plugin's phases, run against stand-ins of DevStack's functions.

No DevStack checkout is here: ``is_service_enabled``, ``setup_develop``,
``iniset``, ``pip_uninstall``, ``echo_summary``, ``die`` and ``define_plugin``
are small stand-ins with DevStack's arguments (below), which record their
calls; the plugin's own ``settings`` and ``plugin.sh`` run unchanged under
bash, and the nova.conf they write is read back by the drop-in's options.
"""

from __future__ import annotations

import pathlib
import subprocess

import pytest
from oslo_config import cfg

from nova_disk_tuning.conf import disk_tuning

ROOT = pathlib.Path(__file__).resolve().parents[2]

STAND_INS = r"""
set -o errexit -o nounset -o pipefail
CALLS=$WORK/calls
function define_plugin { echo "define_plugin $*" >> "$CALLS"; }
function is_service_enabled { [[ ",$ENABLED_SERVICES," == *",$1,"* ]]; }
function setup_develop { echo "setup_develop $*" >> "$CALLS"; }
function pip_uninstall { echo "pip_uninstall $*" >> "$CALLS"; }
function echo_summary { echo "summary: $*"; }
function die { shift; echo "ERROR: $*" >&2; exit 1; }
function iniset {
    python3 - "$@" <<'PY'
import configparser, sys
path, section, option, value = sys.argv[1:]
conf = configparser.ConfigParser(interpolation=None)
conf.optionxform = str
conf.read(path)
if section != "DEFAULT" and not conf.has_section(section):
    conf.add_section(section)
conf.set(section, option, value)
with open(path, "w") as f:
    conf.write(f)
PY
}
"""

PHASES = [
    ("stack", "pre-install"),
    ("stack", "install"),
    ("stack", "post-config"),
    ("stack", "extra"),
    ("unstack", ""),
    ("clean", ""),
]


def run_devstack(tmp_path, phases=PHASES, **env: str | None) -> subprocess.CompletedProcess:
    nova_conf = tmp_path / "nova.conf"
    if not nova_conf.exists():
        nova_conf.write_text("[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n")
    script = [STAND_INS, f"source {ROOT}/devstack/settings"]
    script += [f"source {ROOT}/devstack/plugin.sh {a} {b}" for a, b in phases]
    variables = {
        "WORK": str(tmp_path),
        "DEST": "/opt/stack",
        "ENABLED_SERVICES": "n-api,n-cpu,n-cond",
        "VIRT_DRIVER": "libvirt",
        "NOVA_CONF": str(nova_conf),
        "NOVA_CPU_CONF": str(tmp_path / "nova-cpu.conf"),
        "PATH": "/usr/bin:/bin",
    }
    variables.update(env)
    variables = {name: value for name, value in variables.items() if value is not None}
    return subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=variables,
        capture_output=True,
        text=True,
        check=False,
    )


def calls(tmp_path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def drop_in_options(path: pathlib.Path) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt("compute_driver"))
    conf.register_opts(disk_tuning.disk_tuning_opts, group="disk_tuning")
    conf(["--config-file", str(path)], default_config_files=[])
    return conf


def test_every_phase_in_order(tmp_path):
    result = run_devstack(tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path) == [
        "define_plugin nova-disk-tuning",
        "setup_develop /opt/stack/nova-disk-tuning",
        "pip_uninstall nova-disk-tuning",
    ]
    conf = drop_in_options(tmp_path / "nova.conf")
    assert conf.compute_driver == "disk_tuning.LibvirtDriver"
    assert conf.disk_tuning.aio_mode == "auto"
    # Empty NOVA_DISK_TUNING_PREALLOCATE: Nova's own option decides.
    assert conf.disk_tuning.preallocate_images is None
    assert not (tmp_path / "nova-cpu.conf").exists()


@pytest.mark.parametrize("mode", ["space", "performance"])
def test_preallocation_and_an_existing_compute_conf(tmp_path, mode):
    (tmp_path / "nova-cpu.conf").write_text("[DEFAULT]\nhost = compute1\n")
    result = run_devstack(
        tmp_path, NOVA_DISK_TUNING_PREALLOCATE=mode, NOVA_DISK_TUNING_AIO_MODE="io_uring"
    )
    assert result.returncode == 0, result.stderr
    for name in ("nova.conf", "nova-cpu.conf"):
        conf = drop_in_options(tmp_path / name)
        assert conf.compute_driver == "disk_tuning.LibvirtDriver"
        assert (conf.disk_tuning.preallocate_images, conf.disk_tuning.aio_mode) == (
            mode,
            "io_uring",
        )
    assert "host = compute1" in (tmp_path / "nova-cpu.conf").read_text()


@pytest.mark.parametrize(
    ("setting", "opt"),
    [
        ("NOVA_DISK_TUNING_PREALLOCATE", "preallocate_images"),
        ("NOVA_DISK_TUNING_AIO_MODE", "aio_mode"),
    ],
)
def test_the_settings_take_the_choices_of_their_options(tmp_path, setting, opt):
    # The plugin's lists are the options' own: every choice passes, another value
    # stops stack.sh in one line before anything is installed.
    (choices,) = [o.type.choices for o in disk_tuning.disk_tuning_opts if o.name == opt]
    for choice in choices:
        assert run_devstack(tmp_path, **{setting: choice}).returncode == 0, choice
    result = run_devstack(tmp_path, **{setting: "everything"})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{setting}='everything' is not one of" in result.stderr


def test_another_virt_driver_stops_in_one_line(tmp_path):
    result = run_devstack(tmp_path, VIRT_DRIVER="ironic")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "ERROR: nova-disk-tuning needs VIRT_DRIVER=libvirt (it is 'ironic'): set it in local.conf"
    ]
    assert calls(tmp_path) == ["define_plugin nova-disk-tuning"]


def test_a_host_without_the_compute_service_is_left_alone(tmp_path):
    before = "[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n"
    result = run_devstack(tmp_path, ENABLED_SERVICES="n-api,n-cond,g-api")
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path) == ["define_plugin nova-disk-tuning"]
    assert (tmp_path / "nova.conf").read_text() == before


def test_a_missing_nova_conf_at_post_config_stops_in_one_line(tmp_path):
    result = run_devstack(tmp_path, NOVA_CONF=str(tmp_path / "absent.conf"))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "NOVA_CONF" in line and "absent.conf" in line and "is not a file" in line


def test_unset_variables_under_set_u_are_no_bash_error(tmp_path):
    # DevStack sets them; the plugin must still not die on "unbound variable".
    env = {"NOVA_CPU_CONF": None, "DEST": None}
    phases = [("stack", "install"), ("stack", "post-config"), ("unstack", "")]
    result = run_devstack(tmp_path, phases=phases, **env)
    assert result.returncode == 0, result.stderr
    assert "unbound variable" not in result.stderr
