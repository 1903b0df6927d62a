"""The ``nova-disk-tuning`` command line."""
