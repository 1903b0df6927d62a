"""``hw:disk_iothreads`` for nova-api's flavor extra spec validation (microversion >= 2.86).

Registered through the ``nova.api.extra_spec_validators`` entry point, so
``openstack flavor set --property hw:disk_iothreads=x`` is refused by the API
instead of being found out at the next boot.
"""

from __future__ import annotations

from nova.api.validation.extra_specs import base

from nova_disk_tuning.policy.iothreads import EXTRA_SPEC

EXTRA_SPEC_VALIDATORS = [
    base.ExtraSpecValidator(
        name=EXTRA_SPEC,
        description=(
            "IOThreads of the guest's disks with nova-disk-tuning's compute driver "
            "(overrides [disk_tuning] iothreads); 0 runs disk I/O in QEMU's main loop."
        ),
        value={"type": int, "min": 0},
    ),
]


def register() -> list[base.ExtraSpecValidator]:
    return EXTRA_SPEC_VALIDATORS
