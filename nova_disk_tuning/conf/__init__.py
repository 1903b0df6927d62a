"""Configuration: Nova's nova.conf options plus the [disk_tuning] group.

There is no global ConfigOpts: callers build one with :func:`load` (the CLI)
or :func:`new_conf` (tests, library users) and pass it down, so values are
read when used and tests never share state.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Mapping

from oslo_config import cfg

from nova_disk_tuning import exception
from nova_disk_tuning.common import textfile
from nova_disk_tuning.conf import compute, default, disk_tuning, libvirt

_MODULES = (default, compute, libvirt, disk_tuning)


def register_opts(conf: cfg.ConfigOpts) -> None:
    for module in _MODULES:
        for group in module.list_opts():
            if isinstance(group, cfg.OptGroup):
                # ConfigOpts.register_group() keeps a shallow copy that shares
                # the module-level group's option table, and with it every
                # set_override(), between all ConfigOpts; give each its own.
                conf.register_group(cfg.OptGroup(group.name, title=group.title, help=group.help))
        module.register_opts(conf)


def preallocation(conf: cfg.ConfigOpts) -> str:
    """The preallocation mode in force: none, space or performance.

    ``[disk_tuning] preallocate_images`` wins when set: inside nova-compute
    ``[DEFAULT] preallocate_images`` is Nova's option, which refuses
    ``performance``.
    """
    mode: str = conf.disk_tuning.preallocate_images or conf.preallocate_images
    return mode


def lock_wait_timeout(conf: cfg.ConfigOpts) -> float | None:
    """How long a lock wait may last, in seconds; None: as long as it takes."""
    seconds: int = conf.disk_tuning.lock_wait_timeout
    return float(seconds) if seconds else None


def new_conf(
    config_files: Iterable[str] = (),
    config_dirs: Iterable[str] = (),
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> cfg.ConfigOpts:
    """Return a parsed, validated ConfigOpts with every option registered.

    ``overrides`` is ``{group: {option: value}}`` (group ``DEFAULT`` for the
    default group), applied with ``set_override``.
    """
    config_files, config_dirs = list(config_files), list(config_dirs)
    for path in [*config_files, *(f for d in config_dirs for f in config_dir_files(d))]:
        _check_readable(path)
    conf = cfg.ConfigOpts()
    register_opts(conf)
    try:
        conf(
            args=[],
            project="nova",
            prog="nova-disk-tuning",
            default_config_files=config_files,
            default_config_dirs=config_dirs,
            use_env=False,
        )
    except (cfg.ConfigFilesNotFoundError, cfg.ConfigDirNotFoundError) as exc:
        raise exception.InvalidConfig(
            reason=f"{exc}. Pass an existing file with --config-file."
        ) from None
    except cfg.ConfigFileParseError as exc:
        raise exception.InvalidConfig(
            reason=f"{exc}. Fix the syntax of that file (INI format)."
        ) from None
    for group, values in (overrides or {}).items():
        for name, value in values.items():
            conf.set_override(name, value, group=None if group == "DEFAULT" else group)
    validate(conf)
    return conf


def _check_readable(path: str) -> None:
    """A config file oslo.config could not read would hang or end in a traceback: say why now.

    oslo.config opens the file again by its name: the check guards against
    what is there by mistake (a FIFO, a device, a huge or non-UTF-8 file),
    in a file the operator controls.
    """
    try:
        textfile.read_text(path, "config file", textfile.CONFIG_LIMIT)
    except (FileNotFoundError, NotADirectoryError):
        return  # oslo.config's own message names it
    except exception.InputUnreadable as exc:
        hint = ""
        if os.path.isdir(path):
            hint = "; pass a directory with --config-dir instead"
        raise exception.InvalidConfig(reason=f"{exc}{hint}") from None
    except OSError as exc:
        raise exception.InvalidConfig(
            reason=f"config file {path} cannot be read: {exc.strerror}"
        ) from None


def config_dir_files(directory: str) -> list[str]:
    """The ``*.conf`` files oslo.config reads from ``directory``, in its order."""
    try:
        # As oslo.config's glob: hidden files are not read.
        names = sorted(
            n for n in os.listdir(directory) if n.endswith(".conf") and not n.startswith(".")
        )
    except OSError:
        return []  # oslo.config says what is wrong with the directory
    return [os.path.join(directory, name) for name in names]


def validate(conf: cfg.ConfigOpts) -> None:
    """Read every option once so a bad value fails now, in one clear line.

    oslo.config checks choices and types lazily, on first access, deep inside
    whatever code reads the option first; an operator should instead see the
    option, the value and the allowed values before any work starts.
    """
    _validate_instances_path(conf)
    for module in _MODULES:
        for group, opts in module.list_opts().items():
            group_name = group if isinstance(group, str) else group.name
            section = conf if group_name == "DEFAULT" else conf[group_name]
            for opt in opts:
                try:
                    getattr(section, opt.dest)
                except (cfg.ConfigFileValueError, ValueError) as exc:
                    raise exception.InvalidConfig(
                        reason=_describe(group_name, opt, exc, conf.config_file)
                    ) from None


def _validate_instances_path(conf: cfg.ConfigOpts) -> None:
    # A relative path would put instances wherever a command happens to run,
    # and `list` from anywhere else would find none.
    path = conf.instances_path
    if not path or not os.path.isabs(path):
        sources = ", ".join(conf.config_file) or "the configuration"
        raise exception.InvalidConfig(
            reason=f"[DEFAULT] instances_path {path!r} must be an absolute directory path. "
            f"Fix it in {sources}."
        )


def _describe(group: str, opt: cfg.Opt, exc: Exception, files: Iterable[str]) -> str:
    detail = str(exc)
    # oslo.config says "Value for option X from LocationInfo(...) is not
    # valid: Valid values are [...], but found 'y'"; keep the useful tail.
    marker = "is not valid: "
    if marker in detail:
        detail = detail.split(marker, 1)[1]
    raw = _raw_value(files, group, opt.name)
    if raw is not None and repr(raw) not in detail:
        detail = f"{raw!r}: {detail}"
    where = f"[{group}] {opt.name}"
    allowed = ""
    choices = getattr(opt.type, "choices", None)
    if choices and "Valid values" not in detail:
        allowed = f" Allowed values: {', '.join(str(c) for c in choices)}."
    sources = ", ".join(files) or "the configuration"
    return f"{where}: {detail}.{allowed} Fix it in {sources}."


def _raw_value(files: Iterable[str], group: str, name: str) -> str | None:
    """The value as written in the last file that sets it (for error messages)."""
    value = None
    for path in files:
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(path)
        except configparser.Error:
            continue
        section = parser.defaults() if group == "DEFAULT" else None
        if section is None and parser.has_section(group):
            section = parser[group]
        if section is not None and name in section:
            value = section[name]
    return value
