"""Entry point of ``nova-disk-tuning``.

Each command lives in its own module with ``register(subparsers)``; the
parser stores the handler in ``args.func(args, conf) -> int``. Commands of
other distributions come by entry point (group ``nova_disk_tuning.commands``):
``bench`` is the benchmarks' (``pip install 'nova-disk-tuning[bench]'``),
which compute nodes do not install.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import logging
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable
from importlib import metadata
from types import FrameType
from typing import Any

from nova_disk_tuning import conf as ndt_conf
from nova_disk_tuning import exception

COMMAND_MODULES = (
    "nova_disk_tuning.cmd.host_disks",
    "nova_disk_tuning.cmd.images",
    "nova_disk_tuning.cmd.explain",
    "nova_disk_tuning.cmd.audit",
    "nova_disk_tuning.cmd.instances",
    "nova_disk_tuning.cmd.demo",
)
# 128 + SIGPIPE: the status of a writer whose reader left, as for any Unix tool.
_EXIT_SIGPIPE = 128 + signal.SIGPIPE
# Entry points of other distributions' commands: name = module with register().
COMMANDS_GROUP = "nova_disk_tuning.commands"
# Commands this package names although another distribution provides them.
OPTIONAL_COMMANDS = {
    "bench": (
        "Benchmark disk layouts, conversion and zeroing (not installed).",
        "pip install 'nova-disk-tuning[bench]'",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nova-disk-tuning",
        description="Fast and safe instance disks for Nova's libvirt driver.",
    )
    parser.add_argument(
        "--config-file",
        action="append",
        default=None,
        metavar="FILE",
        help="nova.conf to read (repeatable; default: /etc/nova/nova.conf if present).",
    )
    parser.add_argument(
        "--config-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="Directory of *.conf files read after the config files (repeatable).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log decisions (INFO).")
    parser.add_argument("-d", "--debug", action="store_true", help="Log everything (DEBUG).")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for entry in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if entry.name in subparsers.choices:
            continue  # a command of this package (or an earlier plug-in) keeps its name
        try:
            entry.load().register(subparsers)
        except Exception as exc:  # one broken plug-in must not break every command
            if entry.name not in subparsers.choices:
                reason = f"it cannot be loaded ({entry.value}: {exc}); reinstall its package"
                _unavailable(subparsers, entry.name, "(cannot be loaded)", reason)
    for name, (summary, install) in OPTIONAL_COMMANDS.items():
        if name not in subparsers.choices:
            _unavailable(subparsers, name, summary, f"it is not installed; {install}")
    return parser


def _unavailable(
    subparsers: argparse._SubParsersAction, name: str, summary: str, reason: str
) -> None:
    """``name`` as a command that fails in one line saying why and what to do."""
    # No option prefix: whatever follows (--help, --quick) is taken as it is.
    parser = subparsers.add_parser(name, help=summary, add_help=False, prefix_chars="\0")
    parser.add_argument("rest", nargs="*")

    def handler(_args: argparse.Namespace, _conf: Any) -> int:
        raise exception.InvalidConfig(reason=f"the {name} command is unavailable: {reason}")

    parser.set_defaults(func=handler)


def _config_files(args: argparse.Namespace) -> list[str]:
    if args.config_file is not None:
        # action="append": the --config-file values, in order.
        files: list[str] = args.config_file
        return files
    from oslo_config import cfg

    return cfg.find_config_files(project="nova", prog="nova")


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if not (args.verbose or args.debug):
        # oslo.utils' format inspector warns about every unsafe image it sees;
        # our own error line already says why the image is refused.
        logging.getLogger("oslo_utils.imageutils.format_inspector").setLevel(logging.ERROR)


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so every clean-up path runs for both."""


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise Terminated()


def _deliver_again(hook: Any) -> Callable[[Any], None]:
    """A sys.unraisablehook that gives a swallowed SIGTERM a second chance.

    Python runs the handler between any two bytecodes, also inside code that
    cannot propagate an exception (an os.fork() handler of logging, run by
    every subprocess start): there Terminated is only printed as "Exception
    ignored" and the command would go on. So it is delivered again 10 ms
    later (SIGALRM, same handler), outside that code; a signal sent to
    ourselves right away would run the handler inside this hook and be
    swallowed again.
    """

    def unraisable(args: Any) -> None:
        if isinstance(args.exc_value, Terminated):
            signal.signal(signal.SIGALRM, _terminate)
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        hook(args)

    return unraisable


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process; the signal handlers are put back after it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    # A service manager or an operator's kill stops a command with SIGTERM:
    # undo half-made work exactly as for Ctrl-C (default: die on the spot).
    previous = signal.signal(signal.SIGTERM, _terminate)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _deliver_again(sys.unraisablehook)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


def cli() -> None:
    """The ``nova-disk-tuning`` program: :func:`main`, then exit with its status.

    Once the command has ended and said how, a SIGTERM has nothing left to
    undo; under the default action it would turn the status just printed
    into "killed" while the process shuts down. So it is ignored from then.
    Names on the command line and from the kernel are str with
    surrogateescape (Python's file-system decoding): written back out, they
    are the bytes they came as, whatever they are.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")
    try:
        code = main()
    except Terminated:  # between the command's end and main's own return
        code = 128 + signal.SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or _EXIT_SIGPIPE
    _quiet_stdout()
    sys.exit(code)


def _run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"nova-disk-tuning {args.command}: error: {message}", file=sys.stderr)
        return 1

    try:
        for directory in args.config_dir:
            if not os.path.isdir(directory):
                raise exception.InvalidConfig(
                    reason=f"--config-dir {directory} is not a directory; pass an existing one"
                )
        conf = ndt_conf.new_conf(_config_files(args), args.config_dir)
        code = int(args.func(args, conf) or 0)
        sys.stdout.flush()  # a reader that left is found here, not at exit
        return code
    except exception.NovaDiskTuningException as exc:
        return fail(str(exc))
    except BrokenPipeError:
        if not _reader_left(sys.stdout):
            raise
        # `nova-disk-tuning spawn ... | head`: the reader took what it wanted.
        # What the command did stays done; nothing is undone for it.
        print(
            f"nova-disk-tuning {args.command}: stopped writing: the reader of its output "
            "closed it (what the command did stays done)",
            file=sys.stderr,
        )
        return _EXIT_SIGPIPE
    except Terminated:
        print(f"nova-disk-tuning {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"nova-disk-tuning {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # Expected failures are raised as NovaDiskTuningException with what
        # to do; an OSError that escapes still ends in one line, not a trace.
        if args.debug:
            traceback.print_exc()
        name = errno.errorcode.get(exc.errno or 0, "")
        where = f" ({exc.filename})" if exc.filename else ""
        return fail(f"{exc.strerror or exc}{where} [{name}]. Run with --debug for details.")
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        return fail(
            f"unexpected {type(exc).__name__}: {exc}. This is a bug: "
            "run with --debug and report the traceback."
        )


def _reader_left(stream: Any) -> bool:
    """Whether ``stream`` is a pipe or socket whose reader closed it (poll says POLLERR)."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: its reader left, and Python's final flush would complain."""
    if _reader_left(sys.stdout):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    cli()
