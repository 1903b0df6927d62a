"""The one-box as a whole: start every service in order, stop all of it, whatever happens.

``with OneBox(workdir) as box:`` starts MariaDB, RabbitMQ, placement, glance,
the Neutron stand-in, nova-api/conductor/scheduler and one nova-compute per
driver, each compute on a private libvirtd whose host name is the compute's; it
uploads the test guest to glance and makes the two flavors. Leaving the block
(normally, on an error, Ctrl-C or SIGTERM) stops them all and ends every process
of the run (:func:`.procs.reap`). The work directory is the box's own: a
marker file says so, and a later run removes it only if the marker is there.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from nova_disk_tuning_bench.guest import kit as guest_kit
from nova_disk_tuning_bench.guest.daemon import PrivateLibvirtd, private_libvirtd
from nova_disk_tuning_bench.guest.procs import reap_pidfiles
from nova_disk_tuning_bench.onebox import infra, nova
from nova_disk_tuning_bench.onebox.api import Glance, Nova
from nova_disk_tuning_bench.onebox.guests import guest_cmdline
from nova_disk_tuning_bench.onebox.nova import Compute
from nova_disk_tuning_bench.onebox.procs import OneboxError, Services, reap, tail

MARKER = ".nova-disk-tuning-onebox"
MIB = 1 << 20
# What the drop-in's compute adds to nova.conf: the measured defaults of the
# project's own test set-up (tests/nova/test_real_guest.py).
DROPIN_SETTINGS: dict[str, dict[str, object]] = {
    "disk_tuning": {"preallocate_images": "performance", "iothreads": 2},
}
# The computes a box can run: driver and what their nova.conf adds.
COMPUTES: dict[str, tuple[str, dict[str, dict[str, object]]]] = {
    "nova": (nova.NOVA_DRIVER, {}),
    "dropin": (nova.DROPIN_DRIVER, DROPIN_SETTINGS),
    # Nova's driver with Nova's own preallocation (fallocate after creating each
    # disk): what an operator who preallocates without the drop-in runs.
    "nova-space": (nova.NOVA_DRIVER, {"DEFAULT": {"preallocate_images": "space"}}),
}
# Lines of the services' logs at WARNING or above that are Nova's, oslo's or
# this box's own and no fault of the drop-in, each with why. Every other line
# at WARNING or above, and every traceback, fails the run.
EXPECTED_LOG_LINES = {
    # Debian 12's libvirt 9.0 and QEMU 7.2 are below what Nova 34 will require next.
    r"Running Nova with a (libvirt|QEMU) version less than": "Debian 12's stack",
    # Nova 34 still calls Neutron through neutronclient, which says so at every client.
    r"The python binding code in neutronclient is deprecated": "Nova's own client",
    # A compute's first start, which Nova itself says to ignore.
    r"since it is not registered|were not found in the database\. If this is the first time"
    r"|No compute node record (found )?for": "a compute's first start",
    r"no_fork=True: running service in main process": "oslo.service, every nova-compute",
    # Nova's periodic count of disk usage meets a resize moving the disks (either driver).
    r"the backing disk storage was removed by a concurrent operation such as resize": "Nova's race",
    # A compute's claim and its periodic resource update both write its
    # provider's inventory (here the host's memory total moves between reads);
    # placement refuses the older generation, Nova logs it at ERROR and the
    # next update succeeds. Seen on either driver.
    r"Failed to update inventory to .* Got 409: .*placement\.concurrent_update": "Nova's race",
    # Nova's periodic power-state sync counts while a step has no domain defined
    # (a shelve offload, a resize between its domains); either driver.
    r"While synchronizing instance power states, found \d+ instances in the database and \d+ "
    r"instances on the hypervisor": "Nova's periodic count during a step",
    # The private libvirtd loads only its QEMU driver (no driver may touch the
    # host's devices, network or firewall); Nova carries on without PCI devices.
    r"virConnectListAllNodeDevices": "the private libvirtd has no node-device driver",
    # oslo.privsep's daemon imports eventlet, whose import warns; privsep relays
    # the warning's lines from the helper's stderr one by one.
    r"privsep log:\s*(\S*daemon\.py:\d+: EventletDeprecationWarning:|Eventlet is deprecated"
    r"|we strongly recommend against|If you are already using Eventlet|framework\.  For more"
    r"|https://eventlet\.readthedocs|  import eventlet|$)": "oslo.privsep's eventlet import",
}


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _clear(workdir: Path) -> None:
    """Empty ``workdir`` if an earlier run made it; refuse anything else."""
    if not workdir.exists():
        workdir.mkdir(parents=True)
    elif any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise OneboxError(
            f"{workdir} is not empty and was not made by a one-box run: choose another --workdir"
        )
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(workdir) + "/")
    ]
    if mounts:
        raise OneboxError(f"{mounts[0]} is mounted inside {workdir}: unmount it first")
    for old in workdir.glob("ndt-libvirtd-*"):
        reap_pidfiles(old)
    reap(workdir)
    for entry in workdir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (workdir / MARKER).write_text("made by python -m nova_disk_tuning_bench.onebox\n")


class OneBox:
    def __init__(self, workdir: Path, computes: tuple[str, ...] = ("nova", "dropin")) -> None:
        self.workdir = workdir.resolve()
        self.wanted = computes
        self.services = Services(self.workdir)
        self.stack = contextlib.ExitStack()
        self.daemons: dict[str, PrivateLibvirtd] = {}
        self.computes: dict[str, Compute] = {}
        self.ends = infra.Endpoints()
        self.images = Path()
        self.image = ""
        self.flavors: tuple[str, str] = ("", "")
        self.conf = Path()
        self.nova_url = ""

    def __enter__(self) -> OneBox:
        _clear(self.workdir)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop everything; a second Ctrl-C or SIGTERM cannot cut this short."""
        with _uninterruptible():
            self.services.stop_all()
            self.stack.close()

    @property
    def nova(self) -> Nova:
        return Nova(self.nova_url)

    @property
    def glance(self) -> Glance:
        return Glance(self.ends.glance)

    def _start(self) -> None:
        kit = guest_kit.build_guest_kit()
        infra.start_mariadb(self.services, self.ends)
        infra.start_rabbitmq(self.services, self.ends)
        infra.start_placement(self.services, self.ends)
        self.images = infra.start_glance(self.services, self.ends)
        infra.start_neutron_standin(self.services, self.ends)
        self.conf = nova.write_nova_conf(self.workdir, self.ends)
        nova.write_db_conf(self.workdir, self.ends)
        nova.set_up_databases(self.services, self.conf, self.ends)
        self.nova_url = nova.start_control_plane(self.services, self.conf)
        for name in self.wanted:
            driver, settings = COMPUTES[name]
            host = f"onebox-{name}"
            daemon = self.stack.enter_context(
                private_libvirtd(base_dir=str(self.workdir), hostname=host)
            )
            compute = Compute(
                name, driver, daemon.uri, self.workdir / f"instances-{name}", settings
            )
            self.daemons[name], self.computes[name] = daemon, compute
            nova.start_compute(self.services, self.conf, compute)
        self._wait_computes()
        self._upload(kit)

    def _wait_computes(self, timeout: float = 300.0) -> None:
        hosts = {c.host for c in self.computes.values()}
        deadline = time.monotonic() + timeout
        while True:
            for compute in self.computes.values():
                self._check_compute(compute)
            up = {h for h, s in self.nova.computes().items() if s["state"] == "up"}
            if hosts <= up:
                nova.discover_hosts(self.services, self.conf)
                if hosts <= self.nova.hypervisors():
                    return
            if time.monotonic() > deadline:
                raise OneboxError(
                    f"nova-compute on {sorted(hosts - up)} did not come up in {timeout:.0f} s: "
                    f"see {self.services.logs}"
                )
            time.sleep(1)

    def _check_compute(self, compute: Compute) -> None:
        # nova-compute logs a failed start and then keeps running (it does not exit).
        self.services.check(compute.service)
        log = self.services.log(compute.service)
        if re.search(r" (CRITICAL|ERROR) nova ", log.read_text(errors="replace")):
            raise OneboxError(f"{compute.service} failed to start: see {log}\n{tail(log)}")

    def _upload(self, kit: guest_kit.GuestKit) -> None:
        kernel = self.glance.upload("onebox-kernel", Path(kit.kernel), "aki")
        ramdisk = self.glance.upload("onebox-ramdisk", Path(kit.initrd), "ari")
        # The root image is a small raw disk: the guest runs from its initramfs
        # and only writes and reads its disks.
        self.image = self.glance.upload(
            "onebox-guest", bytes(16 * MIB), "raw",
            kernel_id=kernel, ramdisk_id=ramdisk, os_command_line=guest_cmdline(),
        )  # fmt: skip
        self.flavors = (
            self.nova.flavor("onebox.small", vcpus=2, disk=1, ephemeral=1),
            self.nova.flavor(
                "onebox.resized", vcpus=2, disk=1, ephemeral=1, **{"hw:disk_iothreads": "1"}
            ),
        )

    def unexpected_log_lines(self) -> list[str]:
        """Every WARNING, ERROR or traceback line of the services' logs not expected."""
        found = []
        for log in sorted(self.services.logs.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if not re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", line):
                    continue
                if any(re.search(pattern, line.rstrip()) for pattern in EXPECTED_LOG_LINES):
                    continue
                found.append(f"{log.name}: {line.strip()[:300]}")
        return found
