"""Small input files read whole, and everything that is not one refused at once."""

from __future__ import annotations

import os
import socket

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.common import textfile


def test_a_small_utf8_file_is_read(tmp_path):
    path = tmp_path / "nova.conf"
    path.write_text("[DEFAULT]\n# café\n", encoding="utf-8")
    assert textfile.read_text(str(path), "config file") == "[DEFAULT]\n# café\n"


def test_dev_null_is_empty():
    assert textfile.read_text("/dev/null", "config file") == ""


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: os.mkfifo(p), "a FIFO"),
        (lambda p: os.mkdir(p), "a directory"),
        (lambda p: os.symlink("/dev/zero", p), "a character device"),
        (lambda p: socket.socket(socket.AF_UNIX).bind(str(p)), "a socket"),
    ],
    ids=["fifo", "directory", "dev-zero", "socket"],
)
def test_special_files_are_refused_without_waiting(tmp_path, make, said):
    path = tmp_path / "input"
    make(path)
    with pytest.raises(exception.InputUnreadable, match=f"it is {said}; give a regular file"):
        textfile.read_text(str(path), "config file")


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.xml"
    with open(path, "wb") as handle:
        handle.truncate(1 << 40)  # sparse: reading it would take hours
    with pytest.raises(exception.InputUnreadable, match="larger than any domain XML"):
        textfile.read_bytes(str(path), "domain XML", limit=1024)


def test_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "a.conf"
    path.write_bytes("[DEFAULT]\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(exception.InputUnreadable, match=r"byte 15 is 0xe9"):
        textfile.read_text(str(path), "config file")


def test_missing_is_the_callers_to_say(tmp_path):
    with pytest.raises(FileNotFoundError):
        textfile.read_text(str(tmp_path / "missing"), "config file")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        textfile.read_text(str(tmp_path / "file" / "below"), "config file")
