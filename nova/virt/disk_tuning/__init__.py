"""``[DEFAULT] compute_driver = disk_tuning.LibvirtDriver`` for Nova's nova-compute.

Nova loads a compute driver by importing ``nova.virt.<compute_driver>`` and
refuses a full dotted path, so an out-of-tree driver has to ship a module
inside ``nova/virt/``. This file is that module and nothing more: the driver
lives in :mod:`nova_disk_tuning.nova.driver`. It is installed beside Nova's
own drivers, replaces none of Nova's files, and goes away with
``pip uninstall nova-disk-tuning``.
"""

from nova_disk_tuning.nova.driver import LibvirtDriver

__all__ = ["LibvirtDriver"]
