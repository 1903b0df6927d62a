"""``convert`` reads the image it checked, not whatever the path names by then.

An attacker who can write the source's directory swaps, by rename, a safe
image for a hostile one between the check and qemu-img's open: a VMDK
descriptor ``monolithicFlat`` naming a host file, or a qcow2 whose header
names an external data file (``"backing": null`` does not switch that off).
Checked and converted through one descriptor, the output holds the safe
image or nothing, never the host file (CVE-2024-32498's class). A swapper
thread keeps renaming while real conversions run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SECRET = b"HOST-SECRET-" * 4096  # a host file the image owner must never read
ROUNDS = 12
MiB = 1 << 20


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def make_safe(directory: Path, fmt: str) -> Path:
    raw = directory / "safe.raw"
    raw.write_bytes(b"SAFE" * (MiB // 4))
    safe = directory / f"safe.{fmt}"
    qemu_img("convert", "-f", "raw", "-O", fmt, str(raw), str(safe))
    return safe


def make_hostile(directory: Path, fmt: str, secret: Path) -> Path:
    hostile = directory / f"hostile.{fmt}"
    if fmt == "vmdk":
        sectors = secret.stat().st_size // 512
        hostile.write_text(
            "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
            'createType="monolithicFlat"\n'
            f'RW {sectors} FLAT "{secret}" 0\n'
            'ddb.adapterType = "ide"\n'
        )
    else:
        qemu_img(
            "create", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on",
            str(hostile), str(secret.stat().st_size),
        )  # fmt: skip
    return hostile


@pytest.mark.parametrize("fmt", ["vmdk", "qcow2"])
def test_a_hostile_image_swapped_in_is_never_read(tmp_path, fmt):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    shared = tmp_path / "shared"  # the directory the attacker can write
    shared.mkdir()
    safe = make_safe(tmp_path, fmt)
    hostile = make_hostile(tmp_path, fmt, secret)
    src = shared / f"image.{fmt}"
    conf = tmp_path / "nova.conf"
    conf.write_text(f"[DEFAULT]\ninstances_path = {tmp_path / 'instances'}\n")
    stop = threading.Event()

    def swapper() -> None:
        # Rename, never rewrite: the inode a checked descriptor holds stays.
        spare = shared / "spare"
        while not stop.is_set():
            for candidate in (safe, hostile):
                os.link(candidate, spare)
                os.rename(spare, src)
                # Renaming a link onto another link of the same file does nothing.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(spare)

    os.link(safe, src)
    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    outcomes = []
    try:
        for round_ in range(ROUNDS):
            dst = tmp_path / f"out-{round_}.raw"
            result = subprocess.run(
                [sys.executable, "-m", "nova_disk_tuning.cmd.main", "--config-file", str(conf),
                 "convert", str(src), str(dst), "-O", "raw"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if result.returncode == 0:
                data = dst.read_bytes()
                assert b"HOST-SECRET" not in data, f"round {round_} read the host file"
                assert data.startswith(b"SAFE"), f"round {round_}: {data[:16]!r}"
                outcomes.append("converted the safe image")
            else:
                assert "unacceptable" in result.stderr and "Traceback" not in result.stderr
                assert not dst.exists()
                outcomes.append("refused the hostile image")
    finally:
        stop.set()
        thread.join(10)
    assert "converted the safe image" in outcomes, outcomes
