"""The libvirt side: XML config objects, the tuning policy, backends, volume drivers, the driver."""
