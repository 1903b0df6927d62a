"""Option listing for oslo-config-generator (entry point ``oslo.config.opts``)."""

from nova_disk_tuning.conf import compute, default, disk_tuning, libvirt

_MODULES = (default, compute, libvirt, disk_tuning)


def list_opts() -> list:
    """Return ``[(group, [opts])]`` for every option of the plugin."""
    result = []
    for module in _MODULES:
        for group, opts in module.list_opts().items():
            result.append((group, list(opts)))
    return result
