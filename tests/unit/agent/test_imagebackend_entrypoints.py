"""Image backends are found by entry point only, including a third party's.

The third-party package is real metadata: a ``<name>.dist-info`` directory
(METADATA + entry_points.txt) on a new sys.path entry, which importlib
.metadata and stevedore read as they would an installed wheel. stevedore
caches entry points in ~/.cache/python-entrypoints keyed by sys.path (and the
mtimes of its entries), so the new path entry gets a fresh scan; it also keeps
them per process (``ExtensionManager.ENTRY_POINT_CACHE``), which the test
empties as a new process would start with.
"""

from __future__ import annotations

import pytest
from stevedore.extension import ExtensionManager

from nova_disk_tuning import exception
from nova_disk_tuning.agent import loader
from nova_disk_tuning.agent.imagebackend import file, lvm, rbd
from nova_disk_tuning.agent.imagebackend.base import ImageBackend


class ExtraBackend(ImageBackend):
    """What a third-party backend looks like: a subclass registered by entry point."""

    name = "extra"


@pytest.mark.parametrize(
    ("images_type", "expected"),
    [
        ("flat", file.Flat),
        ("raw", file.Flat),
        ("qcow2", file.Qcow2),
        ("lvm", lvm.Lvm),
        ("rbd", rbd.Rbd),
    ],
)
def test_every_backend_loads_by_its_images_type(make_conf, images_type, expected):
    conf = make_conf(libvirt={"images_type": images_type, "images_volume_group": "vg0"})
    cls = loader.image_backend(conf)
    assert cls is expected and issubclass(cls, ImageBackend)
    backend = cls(conf)
    # The defaults a compute driver relies on are made when not injected.
    assert backend.conf is conf and backend.qemu_img.probe is backend.probe
    assert backend.name == ("flat" if images_type == "raw" else images_type)


def test_default_images_type_loads_qcow2_or_flat(make_conf):
    assert loader.image_backend(make_conf(DEFAULT={"use_cow_images": True})) is file.Qcow2
    assert loader.image_backend(make_conf(DEFAULT={"use_cow_images": False})) is file.Flat


def test_a_third_party_backend_is_picked_up(make_conf, tmp_path, monkeypatch):
    dist = tmp_path / "ndt_extra_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ndt-extra-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{loader.IMAGE_BACKENDS}]\nextra = {__name__}:ExtraBackend\n"
    )
    conf = make_conf(libvirt={"images_type": "extra"})
    with pytest.raises(exception.PluginNotFound):
        loader.image_backend(conf)

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})

    assert "extra" in loader.installed(loader.IMAGE_BACKENDS)
    assert loader.image_backend(conf) is ExtraBackend


def test_unknown_images_type_lists_the_backends(make_conf):
    with pytest.raises(exception.PluginNotFound) as info:
        loader.image_backend(make_conf(libvirt={"images_type": "ploop"}))
    message = str(info.value)
    assert "'ploop'" in message and "[libvirt] images_type" in message
    assert "Installed: flat, lvm, qcow2, raw, rbd" in message
