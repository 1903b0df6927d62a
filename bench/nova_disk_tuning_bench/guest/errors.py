"""The errors of the in-guest benchmark, each a one-line message that says what to do."""

from __future__ import annotations

from nova_disk_tuning import exception


class GuestBenchError(exception.NovaDiskTuningException):
    msg_fmt = "bench guest: %(reason)s"


class LibvirtdError(GuestBenchError):
    """The private libvirtd could not be started or used."""

    msg_fmt = "private libvirtd: %(reason)s"


class GuestKitError(GuestBenchError):
    """The guest kit could not be built; the message says which step and why."""

    msg_fmt = "guest kit: %(reason)s"


class GuestRunError(GuestBenchError):
    """A guest did not boot, did not finish, or fio failed in it."""

    msg_fmt = "guest run: %(reason)s"


class GuestLost(GuestRunError):
    """A boot ended with no verdict on its XML, which a run survives.

    The guest hung (GuestStuck), or its QEMU ended without the guest powering
    off: SIGKILL (the OOM killer) or an abort, which libvirt records as
    ``crashed`` (:mod:`~nova_disk_tuning_bench.guest.lifecycle`).
    """

    why = ""  # the reason alone, for a message that adds where the guest was


class GuestStuck(GuestLost):
    """A guest did not power off in time: that boot hung.

    Seen here once in 20 boots of one cell under TCG (QEMU 7.2, soft lockup of
    the guest's CPU in fio); a repetition of the same XML passed.
    """
