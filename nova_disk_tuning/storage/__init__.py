"""Host I/O primitives: fallocate, fast zero, block-device ioctls, probes (no qemu, no libvirt).

- ``fallocate``: fallocate(2) with mode flags, through ctypes.
- ``blockdev``: BLKSSZGET, BLKGETSIZE64, BLKZEROOUT.
- ``probe``: StorageProbe, what the storage under a path can do (cached).
- ``zero``: Zeroer, the fastest zeroing method per storage (remembered).
- ``preallocate``: allocate disk files up front, nothing left on ENOSPC.
- ``kernel``: kernel release and io_uring availability.
"""
