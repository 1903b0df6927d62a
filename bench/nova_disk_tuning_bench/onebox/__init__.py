"""A one-box Nova: the drop-in inside a running Nova, as real processes on one machine.

``python -m nova_disk_tuning_bench.onebox`` (``make nova-demo``) starts, under one
work directory and on loopback ports of its own:

* MariaDB (Nova's three databases and placement's; sqlite fails across Nova's
  processes with "database is locked") and RabbitMQ, private instances of the
  Debian packages, never the system's services;
* placement and glance (a file store, glance's unauthenticated pipeline) under
  gunicorn, nova-api under gunicorn with Nova's own api-paste.ini minus
  ``authtoken`` (no Keystone: the API trusts the X-User-Id / X-Project-Id /
  X-Roles headers, which is what keystonemiddleware would have set);
* nova-conductor, nova-scheduler and two nova-computes, one with Nova's own
  driver (``libvirt.LibvirtDriver``) and one with the drop-in
  (``disk_tuning.LibvirtDriver``), each on a private libvirtd with QEMU under TCG
  (:mod:`nova_disk_tuning_bench.guest.daemon`) and its own instances path.

The stand-ins, and why: Keystone is absent (placement takes an admin token, the
other services are unauthenticated); Neutron is :mod:`.neutron_standin`, which
answers every list with an empty one (servers have ``networks: none``, but Nova
still lists their ports); privsep helpers run directly as root through
``helper_command`` instead of sudo and rootwrap.

It boots the project's test guest (:mod:`nova_disk_tuning_bench.guest.kit`) on
each compute, prints both servers' disk XML and QEMU arguments side by side
with the reasons the drop-in logged, runs the life cycle (:mod:`.lifecycle`) and
stops everything it started, also on Ctrl-C or SIGTERM; what a run killed
with -9 left running is ended by the next run (:mod:`.procs`).
"""
