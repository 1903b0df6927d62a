"""Volume drivers, one module per transport, loaded by ``driver_volume_type``."""
