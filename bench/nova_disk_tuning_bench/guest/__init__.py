"""``nova-disk-tuning bench guest``: fio inside a real guest, on disks the plugin made.

The parts, one module each:

- :mod:`.daemon` (with :mod:`.prerequisites` and :mod:`.procs`): a private
  libvirtd + virtlogd with the QEMU driver in a mount namespace of its own;
- :mod:`.kit` (with :mod:`.initramfs`): Debian's kernel and a busybox
  initramfs carrying the host's fio; :mod:`.console`: what the guest reads
  from its kernel command line and prints on its serial console;
- :mod:`.domains`: QEMU's command line, waiting for a guest, reading images;
- :mod:`.jobs`: the fio jobs, their job files and fio's terse results;
- :mod:`.matrix`: layouts x variants, which cells are legal and safe;
- :mod:`.datadisk`: the data disks, made by the plugin's own image backends;
- :mod:`.boot`: one guest boot running every job; :mod:`.run`: the run;
- :mod:`.report`: the results as rows, JSON entries and tables.

The e2e suite (``tests/e2e``) boots the same kit on the same daemon.
"""
