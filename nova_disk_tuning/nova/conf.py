"""The plugin's options inside Nova's config object.

Nova already owns ``[DEFAULT]``, ``[compute]``, ``[libvirt]`` and
``[image_cache]``; every option of those groups that the project reads has
Nova's name, type and unit (``tests/nova/test_conf.py`` checks it against
Nova), so the policy reads Nova's values directly. Only ``[disk_tuning]`` is
the plugin's; every reader in the drop-in registers it through
:func:`registered` (idempotent), so a backend used without the driver works.
"""

from __future__ import annotations

from oslo_config import cfg

from nova_disk_tuning.conf import disk_tuning

GROUP = disk_tuning.disk_tuning_group.name


class OptionClash(Exception):
    pass


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register ``[disk_tuning]`` into Nova's ConfigOpts; idempotent.

    A ``[disk_tuning]`` option that is already registered with a different
    definition (another plugin using the name) is refused rather than
    silently shared.
    """
    conf.register_group(
        cfg.OptGroup(
            GROUP,
            title=disk_tuning.disk_tuning_group.title,
            help=disk_tuning.disk_tuning_group.help,
        )
    )
    for opt in disk_tuning.disk_tuning_opts:
        try:
            conf.register_opt(opt, group=GROUP)
        except cfg.DuplicateOptError as exc:
            raise OptionClash(
                f"[{GROUP}] {opt.dest} is already registered by something else: {exc}"
            ) from None


def registered(conf: cfg.ConfigOpts) -> cfg.ConfigOpts:
    """``conf`` with ``[disk_tuning]`` registered: what every reader in the drop-in passes on.

    Nova's image backends and fetch run without the driver, which registers
    the options too (Nova's image-backend tests and tools build backends
    alone); registering where the options are read makes each reader work
    on its own. Idempotent, and with :func:`register_opts`'s clash check.
    """
    register_opts(conf)
    return conf


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """What the plugin adds to nova.conf inside Nova, as oslo-config-generator
    and ``oslo_config.sphinxext`` read an ``oslo.config.opts`` entry point:
    ``[(group, [opts])]``."""
    return [(GROUP, list(disk_tuning.disk_tuning_opts))]
