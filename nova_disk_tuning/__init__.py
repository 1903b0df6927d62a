"""nova-disk-tuning: fast and safe instance disks for Nova's libvirt driver."""
