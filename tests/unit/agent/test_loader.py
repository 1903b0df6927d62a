"""Entry-point loading: names come from the installed distributions."""

import pytest

from nova_disk_tuning import exception
from nova_disk_tuning.agent import loader


def test_installed_groups_list_design_names():
    assert {"flat", "raw", "qcow2", "lvm", "rbd"} <= set(loader.installed(loader.IMAGE_BACKENDS))
    assert {"iscsi", "local", "nfs", "rbd"} <= set(loader.installed(loader.VOLUME_DRIVERS))
    assert loader.installed(loader.COMPUTE_DRIVERS) == ["libvirt"]


@pytest.mark.parametrize(
    ("images_type", "use_cow", "expected"),
    [("default", True, "qcow2"), ("default", False, "flat"), ("lvm", True, "lvm")],
)
def test_default_images_type_follows_use_cow_images(make_conf, images_type, use_cow, expected):
    conf = make_conf(DEFAULT={"use_cow_images": use_cow}, libvirt={"images_type": images_type})
    assert loader.image_backend_name(conf) == expected


def test_unknown_backend_lists_installed_names(make_conf):
    conf = make_conf(libvirt={"images_type": "ploop"})
    with pytest.raises(exception.PluginNotFound) as info:
        loader.image_backend(conf)
    message = str(info.value)
    assert "'ploop'" in message and "[libvirt] images_type" in message
    for name in ("flat", "qcow2", "lvm", "rbd"):
        assert name in message


def test_unknown_volume_driver_is_clear():
    with pytest.raises(exception.PluginNotFound, match=r"'carrier-pigeon'.*iscsi"):
        loader.volume_driver("carrier-pigeon")


def test_names_are_listed_without_importing_plugins(monkeypatch):
    from importlib import metadata

    broken = metadata.EntryPoint(
        name="broken", value="nova_disk_tuning.no_such_module:Backend", group=loader.IMAGE_BACKENDS
    )
    real = metadata.entry_points

    def entry_points(**kwargs):
        found = list(real(**kwargs))
        if kwargs.get("group") == loader.IMAGE_BACKENDS:
            found.append(broken)
        return found

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    assert "broken" in loader.installed(loader.IMAGE_BACKENDS)
