"""The drop-in for Nova's nova-compute: ``compute_driver = disk_tuning.LibvirtDriver``.

This package is the only place that imports Nova. It subclasses Nova's own
libvirt driver and changes what this project is about, and nothing else:

* :mod:`.driver` - the driver; every guest config Nova builds (spawn, hard
  reboot, rescue, resize, live migration) and every volume it attaches goes
  through the project's tuning policy;
* :mod:`.disks` - facts about each of Nova's disk config objects, measured
  on the host; a disk that cannot be measured keeps Nova's own settings;
* :mod:`.render` - Nova's disk and controller config objects, taught the
  ``<driver>`` attributes Nova does not render (iothread, queues,
  detect_zeroes, discard_no_unref);
* :mod:`.imagebackend` and :mod:`.fetch` - Nova's image backends with the
  project's preallocation, qcow2 overlays and image conversion;
* :mod:`.conf` - the ``[disk_tuning]`` group registered into Nova's config;
* :mod:`.extra_specs` - the flavor extra spec ``hw:disk_iothreads`` for
  nova-api's validation.

Nova loads the driver through the shim module ``nova/virt/disk_tuning``.
"""
