"""Load image backends, volume drivers and compute drivers by entry point.

A third-party package adds a backend or a volume driver by declaring an
entry point in one of these groups; nothing here lists them by hand.
"""

from __future__ import annotations

from importlib import metadata
from typing import TypeVar

from oslo_config import cfg
from oslo_log import log as logging
from stevedore import driver, extension
from stevedore import exception as stevedore_exc

from nova_disk_tuning import exception
from nova_disk_tuning.agent.imagebackend.base import ImageBackend
from nova_disk_tuning.agent.volume.base import LibvirtBaseVolumeDriver

LOG = logging.getLogger(__name__)
T = TypeVar("T")

IMAGE_BACKENDS = "nova_disk_tuning.image_backends"
VOLUME_DRIVERS = "nova_disk_tuning.volume_drivers"
COMPUTE_DRIVERS = "nova_disk_tuning.compute_drivers"


def installed(group: str) -> list[str]:
    """Names registered in an entry-point group, sorted.

    Read from the distributions' metadata without importing the plugins, so
    one broken plugin cannot hide the others from an error message.
    """
    return sorted({entry.name for entry in metadata.entry_points(group=group)})


def load(group: str, name: str, kind: str, option: str) -> type:
    """Return the class registered as ``name`` in ``group``.

    ``kind`` and ``option`` only make the error useful: what was looked for
    and which setting chose it.
    """

    def not_found(hint: str = "") -> exception.PluginNotFound:
        return exception.PluginNotFound(
            kind=kind,
            name=name,
            group=group,
            available=", ".join(installed(group)) or "none",
            option=option + hint,
        )

    if name not in installed(group):
        raise not_found()

    def broken(
        _manager: extension.ExtensionManager[object],
        entry_point: metadata.EntryPoint,
        error: BaseException,
    ) -> None:
        raise exception.PluginLoadError(kind=kind, name=name, entry_point=entry_point, reason=error)

    try:
        manager: driver.DriverManager[object] = driver.DriverManager(
            group, name, invoke_on_load=False, on_load_failure_callback=broken
        )
    except stevedore_exc.NoMatches:
        # stevedore caches a group's entry points per process; a distribution
        # installed after the first lookup is in the metadata but not in that
        # cache until the process restarts.
        raise not_found(" (installed after this process started? restart it)") from None
    # What manager.driver returns with invoke_on_load=False: the class the
    # entry point names (Extension.plugin, typed as a class; .driver is typed
    # "instance or class" because invoke_on_load=True would make an instance).
    plugin = manager.extensions[0].plugin
    LOG.debug("Loaded %s %r from %s", kind, name, plugin)
    return plugin


def image_backend_name(conf: cfg.ConfigOpts) -> str:
    """``[libvirt] images_type``, with ``default`` resolved as Nova does."""
    name: str = conf.libvirt.images_type
    if name == "default":
        name = "qcow2" if conf.use_cow_images else "flat"
    return name


def _subclass(group: str, name: str, kind: str, option: str, base: type[T]) -> type[T]:
    """``load``, refusing a class that does not keep ``base``'s contract."""
    plugin = load(group, name, kind, option)
    if not (isinstance(plugin, type) and issubclass(plugin, base)):
        raise exception.PluginLoadError(
            kind=kind,
            name=name,
            entry_point=group,
            reason=f"{plugin!r} is not a subclass of {base.__module__}.{base.__name__}",
        )
    return plugin


def image_backend(conf: cfg.ConfigOpts, name: str | None = None) -> type[ImageBackend]:
    """The backend ``name``, by default ``[libvirt] images_type``'s."""
    option = "[libvirt] images_type" if name is None else "an instance record"
    chosen = image_backend_name(conf) if name is None else name
    return _subclass(IMAGE_BACKENDS, chosen, "image backend", option, ImageBackend)


def volume_driver(driver_volume_type: str) -> type[LibvirtBaseVolumeDriver]:
    return _subclass(
        VOLUME_DRIVERS,
        driver_volume_type,
        "volume driver",
        "the volume's connection_info['driver_volume_type']",
        LibvirtBaseVolumeDriver,
    )


def compute_driver(name: str = "libvirt") -> type:
    return load(COMPUTE_DRIVERS, name, "compute driver", "the agent's compute driver")
