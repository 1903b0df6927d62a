"""Options of nova.conf's [compute] group that this plugin reads (Nova's names)."""

from oslo_config import cfg

compute_group = cfg.OptGroup("compute", title="Compute options")

compute_opts = [
    cfg.IntOpt(
        "max_concurrent_disk_ops",
        default=0,
        min=0,
        # Read from [DEFAULT] by releases before 0.1; Nova has it in [compute].
        deprecated_group="DEFAULT",
        help="""
Maximum number of disk-intensive operations (image conversion, copies) run
at the same time on this host.

Possible values:

* 0: no limit.
* Any positive integer.
""",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(compute_group)
    conf.register_opts(compute_opts, group=compute_group)


def list_opts() -> dict:
    return {compute_group: compute_opts}
