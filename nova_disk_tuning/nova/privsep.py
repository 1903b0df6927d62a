"""The drop-in's one privileged operation, run by nova-compute's privsep daemon.

Zeroing an LVM volume needs root, as Nova's own ``shred`` does. The function
runs in Nova's existing ``sys_admin`` privsep context (the daemon Nova already
starts through rootwrap), so operators configure nothing new; oslo.privsep
admits it because this module's name starts with that context's prefix
("nova"), and the daemon imports it from the same environment.
"""

from __future__ import annotations

from typing import Any

import nova.privsep

from nova_disk_tuning.storage.wipe import zero_volume as _zero_volume


@nova.privsep.sys_admin_pctxt.entrypoint
def zero_volume(path: str, clear_size_mib: int) -> dict[str, Any]:
    """Zero a volume with the fast-zero chain; what was done, for the log."""
    result = _zero_volume(path, clear_size_mib)
    return {"method": result.method, "bytes": result.bytes, "seconds": result.seconds}
