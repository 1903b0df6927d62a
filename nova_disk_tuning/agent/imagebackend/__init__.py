"""Image backends: how an instance's root, ephemeral and swap disks are made.

``base`` holds the contract every backend implements; ``file`` the flat
(raw) and qcow2 backends, ``lvm`` and ``rbd`` the others. Each is loaded by
its entry point alone (``nova_disk_tuning.image_backends``), so loading one
imports none of the others.
"""
