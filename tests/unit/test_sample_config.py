"""The committed nova.conf.sample must be what the generator writes now."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "nova-disk-tuning" / "nova.conf.sample"
GENERATOR_CONF = ROOT / "etc" / "nova-disk-tuning" / "nova-disk-tuning-config-generator.conf"


def test_sample_is_up_to_date(tmp_path):
    fresh = tmp_path / "nova.conf.sample"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "oslo_config.generator",
            "--config-file",
            str(GENERATOR_CONF),
            "--output-file",
            str(fresh),
        ],
        check=True,
        cwd=ROOT,
    )
    assert SAMPLE.read_text() == fresh.read_text(), (
        "etc/nova-disk-tuning/nova.conf.sample is stale: run `make genconfig` and commit it"
    )
