"""Image inputs are checked before anything reads them (images/source.py).

Real files, FIFOs, sockets and devices; no root needed. The cases that need
an image made by qemu-img skip when it is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.images import fetch, inspection, source
from nova_disk_tuning.images.cache import ImageCache

MiB = 1 << 20
needs_qemu_img = pytest.mark.skipif(
    shutil.which("qemu-img") is None, reason="qemu-img is not installed (Debian qemu-utils)"
)


def qemu_img(*argv: str) -> None:
    subprocess.run(["qemu-img", *argv], check=True, capture_output=True, timeout=60)


def write_random(path: str, size: int) -> str:
    with open(path, "wb") as handle:
        handle.write(os.urandom(size))
    return path


def truncated(path: str, length: int, name: str) -> str:
    cut = os.path.join(os.path.dirname(path), name)
    with open(path, "rb") as whole, open(cut, "wb") as part:
        part.write(whole.read(length))
    return cut


def qcow2_l1_offset(path: str) -> int:
    with open(path, "rb") as handle:
        return struct.unpack(">Q", handle.read(48)[40:48])[0]


def vmdk_sectors(path: str) -> tuple[int, int]:
    """(gdOffset, overHead) of a sparse VMDK, in sectors."""
    with open(path, "rb") as handle:
        fields = struct.unpack("<4sIIQQQQIQQQ", handle.read(72))
    return fields[9], fields[10]


# -- inputs that are not image files -----------------------------------------------


@pytest.fixture
def fifo(tmp_path) -> str:
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(tmp_path) -> Iterator[str]:
    path = str(tmp_path / "sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        yield path


@pytest.fixture
def zero_link(tmp_path) -> str:
    path = str(tmp_path / "zero.img")
    os.symlink("/dev/zero", path)
    return path


@pytest.fixture
def empty(tmp_path) -> str:
    path = str(tmp_path / "empty.img")
    open(path, "wb").close()
    return path


NOT_IMAGES = {
    "fifo": ("fifo", "it is a FIFO, not a regular file or block device; give the image file"),
    "socket": ("unix_socket", "it is a socket, not a regular file or block device"),
    "directory": ("tmp_path", "it is a directory, not a regular file or block device"),
    "dev-zero": ("/dev/zero", "it is a character device, not a regular file or block device"),
    "dev-zero-symlink": ("zero_link", "it is a character device (/dev/zero, through a symbolic"),
    "empty": ("empty", "it is empty (0 bytes), as an interrupted download or copy leaves it"),
}


def _check_source(path: str, tmp_path) -> object:
    return source.check_source(path)


def _safety_check(path: str, tmp_path) -> object:
    return inspection.ImageSafety().check(path, None)


def _safety_check_raw(path: str, tmp_path) -> object:
    return inspection.ImageSafety().check(path, "raw")


def _detect(path: str, tmp_path) -> object:
    return inspection.ImageSafety().detect(path)


def _fetch(path: str, tmp_path) -> object:
    dest = tmp_path / "fetched"
    try:
        return fetch.LocalFileFetcher().fetch(f"file://{path}", str(dest))
    finally:
        assert not dest.exists(), "the fetcher created its destination for a refused source"


ENTRY_POINTS: dict[str, Callable[[str, object], object]] = {
    "check_source": _check_source,
    "ImageSafety.check": _safety_check,
    "ImageSafety.check-raw": _safety_check_raw,
    "ImageSafety.detect": _detect,
    "LocalFileFetcher.fetch": _fetch,
}


def _input(request, name: str) -> str:
    return name if name.startswith("/") else str(request.getfixturevalue(name))


@pytest.mark.timeout(10)  # a FIFO that is read hangs: fail instead
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
@pytest.mark.parametrize("case", NOT_IMAGES, ids=str)
def test_not_an_image_is_refused_before_reading(request, tmp_path, case, entry):
    fixture, reason = NOT_IMAGES[case]
    path = _input(request, fixture)
    with pytest.raises(exception.ImageUnacceptable) as caught:
        ENTRY_POINTS[entry](path, tmp_path)
    message = str(caught.value)
    assert message == f"Image {path} is unacceptable: {message.split(': ', 1)[1]}"
    assert reason in message
    assert "\n" not in message


@pytest.mark.timeout(10)
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_a_missing_image_is_not_found(tmp_path, entry):
    with pytest.raises(exception.ImageNotFound, match=r"nope\.img does not exist"):
        ENTRY_POINTS[entry](str(tmp_path / "nope.img"), tmp_path)


def test_a_dangling_symlink_is_not_found(tmp_path):
    link = tmp_path / "link.img"
    os.symlink(tmp_path / "gone", link)
    with pytest.raises(exception.ImageNotFound):
        source.check_source(str(link))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", ["fifo", "dev-zero-symlink", "empty"], ids=str)
def test_the_image_cache_refuses_before_fetching(request, make_conf, case):
    """The spawn path: ImageCache.fetch -> fetcher; nothing is left in the cache."""
    path = _input(request, NOT_IMAGES[case][0])
    cache = ImageCache(make_conf())
    with pytest.raises(exception.ImageUnacceptable) as caught:
        cache.fetch("image-1", path, None)
    assert NOT_IMAGES[case][1] in str(caught.value)
    assert os.listdir(cache.base_dir) == []


# -- images that are whole -------------------------------------------------------------


@pytest.fixture
def raw_image(tmp_path) -> str:
    return write_random(str(tmp_path / "data.raw"), 2 * MiB)


@pytest.fixture
def qcow2_image(tmp_path, raw_image) -> str:
    path = str(tmp_path / "data.qcow2")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw_image, path)
    return path


@pytest.fixture
def empty_qcow2(tmp_path) -> str:
    path = str(tmp_path / "empty.qcow2")
    qemu_img("create", "-f", "qcow2", path, "64M")
    return path


def _vmdk(tmp_path, raw_image: str, subformat: str) -> str:
    path = str(tmp_path / f"{subformat}.vmdk")
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}", raw_image, path)
    return path


@pytest.fixture
def sparse_vmdk(tmp_path, raw_image) -> str:
    return _vmdk(tmp_path, raw_image, "monolithicSparse")


@pytest.fixture
def stream_vmdk(tmp_path, raw_image) -> str:
    return _vmdk(tmp_path, raw_image, "streamOptimized")


@pytest.fixture
def footer_vmdk(tmp_path, stream_vmdk) -> str:
    """A streamOptimized VMDK whose grain directory is in a footer (as VMware writes).

    qemu-img writes the grain directory offset into the header; this moves
    it to a footer (marker, copy of the header, end-of-stream marker), which
    qemu-img reads the same way (qemu-img compare agrees).
    """
    with open(stream_vmdk, "rb") as handle:
        data = bytearray(handle.read())
    header = bytes(data[:512])
    struct.pack_into("<Q", data, 56, 0xFFFFFFFFFFFFFFFF)  # gdOffset: GD_AT_END
    footer_marker = struct.pack("<QII", 1, 0, 3).ljust(512, b"\0")  # MARKER_FOOTER
    path = str(tmp_path / "footer.vmdk")
    with open(path, "wb") as handle:
        handle.write(bytes(data) + footer_marker + header + bytes(512))
    return path


@needs_qemu_img
@pytest.mark.parametrize(
    ("fixture", "fmt", "virtual_size"),
    [
        ("raw_image", "raw", 2 * MiB),
        ("qcow2_image", "qcow2", 2 * MiB),
        ("empty_qcow2", "qcow2", 64 * MiB),
        ("sparse_vmdk", "vmdk", 2 * MiB),
        ("stream_vmdk", "vmdk", 2 * MiB),
        ("footer_vmdk", "vmdk", 2 * MiB),
    ],
)
def test_whole_images_are_accepted(request, tmp_path, fixture, fmt, virtual_size):
    path = request.getfixturevalue(fixture)
    checked = source.check_source(path)
    assert checked == source.Source(path, "regular file", os.path.getsize(path))
    found = inspection.ImageSafety().check(path, None)
    assert (found.format, found.virtual_size) == (fmt, virtual_size)
    dest = str(tmp_path / "copy")
    assert fetch.LocalFileFetcher().fetch(path, dest) == checked.size
    with open(path, "rb") as a, open(dest, "rb") as b:
        assert a.read() == b.read()


@needs_qemu_img
def test_a_qcow2_version_2_and_one_of_size_0_are_accepted(tmp_path):
    v2 = str(tmp_path / "v2.qcow2")
    qemu_img("create", "-f", "qcow2", "-o", "compat=0.10", v2, "1G")
    zero = str(tmp_path / "zero.qcow2")
    qemu_img("create", "-f", "qcow2", zero, "0")
    assert inspection.ImageSafety().check(v2, "qcow2").virtual_size == 1 << 30
    assert inspection.ImageSafety().check(zero, "qcow2").virtual_size == 0


# -- truncated images -------------------------------------------------------------------


def _cut_qcow2(path: str) -> dict[str, tuple[int, str]]:
    l1 = qcow2_l1_offset(path)
    return {
        "first-50-bytes": (50, "its qcow2 header is 72 bytes long but the file has 50 bytes"),
        "first-100-bytes": (100, "its qcow2 header is 104 bytes long but the file has 100 bytes"),
        "before-l1-table": (
            l1,
            f"its qcow2 header places the L1 table at byte {l1} (8 bytes) but the file "
            f"has {l1} bytes",
        ),
    }


@needs_qemu_img
@pytest.mark.parametrize("cut", ["first-50-bytes", "first-100-bytes", "before-l1-table"])
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_a_truncated_qcow2_is_refused(tmp_path, empty_qcow2, cut, entry):
    length, reason = _cut_qcow2(empty_qcow2)[cut]
    path = truncated(empty_qcow2, length, "cut.qcow2")
    with pytest.raises(exception.ImageUnacceptable) as caught:
        ENTRY_POINTS[entry](path, tmp_path)
    assert str(caught.value) == (
        f"Image {path} is unacceptable: it is truncated: {reason}; "
        "copy or download the complete image again"
    )


@needs_qemu_img
def test_a_qcow2_with_data_cut_before_its_refcount_table_is_refused(qcow2_image):
    path = truncated(qcow2_image, 65536, "cut.qcow2")  # qemu-img puts it at cluster 1
    with pytest.raises(exception.ImageUnacceptable, match="places the refcount table at byte"):
        inspection.ImageSafety().check(path, "qcow2")


@needs_qemu_img
def test_a_qcow2_with_impossible_clusters_is_refused(tmp_path, empty_qcow2):
    with open(empty_qcow2, "r+b") as handle:
        handle.seek(20)
        handle.write(struct.pack(">I", 0xFFFFFFFF))  # cluster_bits
    with pytest.raises(exception.ImageUnacceptable, match="cluster_bits 4294967295 is outside"):
        source.check_source(empty_qcow2)


@needs_qemu_img
@pytest.mark.parametrize("cut", ["header", "descriptor", "grain-directory", "metadata"])
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_a_truncated_sparse_vmdk_is_refused(tmp_path, sparse_vmdk, cut, entry):
    gd, overhead = vmdk_sectors(sparse_vmdk)
    length, what = {
        "header": (300, "its VMDK header is 512 bytes long but the file has 300 bytes"),
        "descriptor": (4096, "its VMDK header places the descriptor at byte 512"),
        "grain-directory": (gd * 512, f"places the grain directory at byte {gd * 512}"),
        "metadata": (
            (overhead - 1) * 512,
            "places the metadata (header to grain tables) at byte 0",
        ),
    }[cut]
    path = truncated(sparse_vmdk, length, "cut.vmdk")
    with pytest.raises(exception.ImageUnacceptable, match="it is truncated: ") as caught:
        ENTRY_POINTS[entry](path, tmp_path)
    assert what in str(caught.value)


@needs_qemu_img
def test_a_stream_optimized_vmdk_without_its_footer_is_refused(footer_vmdk):
    path = truncated(footer_vmdk, os.path.getsize(footer_vmdk) - 1536, "cut.vmdk")
    with pytest.raises(exception.ImageUnacceptable, match="grain directory is in a footer"):
        inspection.ImageSafety().check(path, "vmdk")


@needs_qemu_img
def test_a_vmdk_with_no_grain_tables_is_refused(sparse_vmdk):
    with open(sparse_vmdk, "r+b") as handle:
        handle.seek(44)
        handle.write(struct.pack("<I", 0))  # numGTEsPerGT
    with pytest.raises(exception.ImageUnacceptable, match="VMDK header is invalid"):
        source.check_source(sparse_vmdk)


def test_a_small_raw_file_with_no_magic_is_accepted(tmp_path):
    path = write_random(str(tmp_path / "tiny.raw"), 100)
    with open(path, "r+b") as handle:
        handle.write(b"\0")  # never the first byte of a qcow2 or VMDK magic
    assert inspection.ImageSafety().check(path, "raw").virtual_size == 100
