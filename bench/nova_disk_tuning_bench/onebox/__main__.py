"""``python -m nova_disk_tuning_bench.onebox``: the drop-in in a running Nova, beside Nova's driver.

Starts the one-box (:mod:`.box`), runs the life cycle of one server on each
compute, prints their disks side by side with the reasons the drop-in logged,
each step's time and whatever went wrong, then stops everything. Exit status 0
only if every check held.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from nova_disk_tuning_bench.guest.errors import GuestKitError, LibvirtdError
from nova_disk_tuning_bench.onebox import lifecycle, report, resize
from nova_disk_tuning_bench.onebox.box import OneBox
from nova_disk_tuning_bench.onebox.procs import OneboxError


def _terminate(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nova_disk_tuning_bench.onebox")
    parser.add_argument(
        "--workdir", type=Path, default=Path("/var/tmp/ndt-onebox"),
        help="The box's own directory (default: /var/tmp/ndt-onebox); emptied first.",
    )  # fmt: skip
    parser.add_argument(
        "--measure-resize", type=int, metavar="N", default=0,
        help="Instead of the life cycle: time N same-host resizes per compute, interleaved, "
        "on Nova's driver (no preallocation, and preallocate_images=space) and the drop-in "
        "(preallocate_images=performance).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the one-box runs QEMU, libvirtd and Nova's privileged helpers: run it as root")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    if args.measure_resize:
        computes: tuple[str, ...] = ("nova", "nova-space", "dropin")
    else:
        computes = ("nova", "dropin")
    try:
        with OneBox(args.workdir, computes=computes) as box:
            print(f"one-box up: nova-api {box.nova_url}, logs in {box.services.logs}")
            if args.measure_resize:
                times, problems = resize.measure(box, args.measure_resize)
            else:
                outcomes = list(lifecycle.run_all(box).values())
                unexpected = box.unexpected_log_lines()
    except KeyboardInterrupt:
        print("interrupted: everything the one-box started is stopped", file=sys.stderr)
        return 130
    except (OneboxError, GuestKitError, LibvirtdError) as exc:
        print(f"one-box failed: {exc}", file=sys.stderr)
        return 1
    if args.measure_resize:
        report.print_resize(times, problems)
        return 0 if not problems else 1
    report.print_report(outcomes, unexpected)
    return 0 if report.all_held(outcomes, unexpected) else 1


if __name__ == "__main__":
    sys.exit(main())
