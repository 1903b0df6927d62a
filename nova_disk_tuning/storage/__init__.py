"""Host I/O primitives: fallocate, fast zero, block-device ioctls, probes (no qemu, no libvirt)."""
