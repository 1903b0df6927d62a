"""Nova's own services: their configuration, schema set-up and processes.

One ``nova.conf`` for every service, and one more file per nova-compute with
what differs between the two computes: the driver, the host name, the private
libvirtd, the instances path and, for the drop-in, ``[disk_tuning]``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from nova_disk_tuning_bench.onebox.infra import (
    BIN,
    Endpoints,
    gunicorn,
    http_ok,
    write_conf,
)
from nova_disk_tuning_bench.onebox.procs import OneboxError, Services, free_port

# The token placement's noauth2 middleware takes for an admin.
PLACEMENT_TOKEN = "admin"
NOVA_DRIVER = "libvirt.LibvirtDriver"
DROPIN_DRIVER = "disk_tuning.LibvirtDriver"


@dataclasses.dataclass
class Compute:
    """One nova-compute: its driver, host name and where its guests live."""

    name: str  # "nova" or "dropin"
    driver: str
    uri: str
    instances: Path
    settings: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"onebox-{self.name}"

    @property
    def service(self) -> str:
        return f"nova-compute-{self.name}"


def api_paste(nova_paste: Path, target: Path) -> Path:
    """Nova's api-paste.ini with ``authtoken`` taken out of its pipelines.

    Without Keystone's middleware, ``keystonecontext`` builds the request
    context from the X-User-Id / X-Project-Id / X-Roles headers the client sends.
    """
    text = nova_paste.read_text()
    changed = re.sub(r" authtoken keystonecontext", " keystonecontext", text)
    if changed == text:
        raise OneboxError(f"{nova_paste} has no 'authtoken keystonecontext' pipeline to adapt")
    target.write_text(changed)
    return target


def write_db_conf(workdir: Path, ends: Endpoints) -> Path:
    """The databases, for the API, conductor, scheduler and nova-manage only.

    A compute is given no database (as in any deployment: it reaches the
    database through the conductor); with one, nova-compute checks the cells'
    service versions itself at start and logs "No DB access allowed".
    """
    return write_conf(
        workdir / "nova" / "nova-db.conf",
        {
            "api_database": {"connection": ends.db("nova_api")},
            "database": {"connection": ends.db("nova")},
        },
    )


def write_nova_conf(workdir: Path, ends: Endpoints) -> Path:
    conf_dir = workdir / "nova"
    conf_dir.mkdir(parents=True, exist_ok=True)
    nova_paste = BIN.parent / "etc" / "nova" / "api-paste.ini"
    if not nova_paste.exists():
        raise OneboxError(f"{nova_paste} is missing: install nova (make nova-demo does)")
    paste = api_paste(nova_paste, conf_dir / "api-paste.ini")
    helper = f"{BIN / 'privsep-helper'} --config-file {conf_dir / 'nova.conf'}"
    admin_token = {"auth_type": "admin_token", "token": PLACEMENT_TOKEN}
    return write_conf(
        conf_dir / "nova.conf",
        {
            "DEFAULT": {
                "transport_url": ends.transport_url,
                "my_ip": "127.0.0.1",
                "allow_resize_to_same_host": "True",
                # The test guest does not answer ACPI: no clean shutdown to wait for.
                "shutdown_timeout": 0,
                "default_ephemeral_format": "ext4",
                "shelved_offload_time": 0,
                "instance_usage_audit": "False",
                "heal_instance_info_cache_interval": -1,
            },
            "wsgi": {"api_paste_config": paste},
            "api": {"auth_strategy": "keystone"},
            "placement": {**admin_token, "endpoint": ends.placement},
            "glance": {"endpoint_override": ends.glance},
            "neutron": {**admin_token, "endpoint": ends.neutron, "endpoint_override": ends.neutron},
            # One worker each: this is a 2-CPU box, not a cloud.
            "scheduler": {"discover_hosts_in_cells_interval": -1, "workers": 1},
            "conductor": {"workers": 1},
            "oslo_concurrency": {"lock_path": workdir / "nova" / "locks"},
            "oslo_messaging_notifications": {"driver": "noop"},
            "vnc": {"enabled": "False"},
            "os_vif_ovs": {"ovsdb_connection": ""},
            # Privileged helpers started directly: the box runs as root, without
            # sudo and rootwrap.
            "privsep": {"helper_command": helper},
            "nova_sys_admin": {"helper_command": helper},
            "privsep_osbrick": {"helper_command": helper},
        },
    )


def set_up_databases(services: Services, conf: Path, ends: Endpoints) -> None:
    manage = [*_manage(conf)]
    services.run("nova-manage", [*manage, "api_db", "sync"])
    services.run(
        "nova-manage",
        [*manage, "cell_v2", "map_cell0", "--database_connection", ends.db("nova_cell0")],
    )
    services.run("nova-manage", [*manage, "db", "sync"])
    services.run("nova-manage", [*manage, "cell_v2", "create_cell", "--name", "cell1"])


def _with_db(conf: Path) -> list[str]:
    return ["--config-file", str(conf), "--config-file", str(conf.parent / "nova-db.conf")]


def _manage(conf: Path) -> list[str]:
    return [str(BIN / "nova-manage"), *_with_db(conf)]


def start_control_plane(services: Services, conf: Path) -> str:
    """Conductor, scheduler and the API; the API's URL."""
    for binary in ("nova-conductor", "nova-scheduler"):
        services.start(binary, [str(BIN / binary), *_with_db(conf)])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gunicorn(
        services, "nova-api", "nova.wsgi.osapi_compute:application", port,
        # Nova's WSGI entry point loads the first file as the paste pipeline.
        {"OS_NOVA_CONFIG_DIR": str(conf.parent),
         "OS_NOVA_CONFIG_FILES": "api-paste.ini;nova.conf;nova-db.conf"},
    )  # fmt: skip
    services.wait("nova-api", lambda: http_ok(url + "/"), 180, "answering")
    return url + "/v2.1"


def start_compute(services: Services, conf: Path, compute: Compute) -> None:
    compute.instances.mkdir(parents=True, exist_ok=True)
    # Each compute keeps its node identity (compute_id) in its own state path.
    state = conf.parent / f"state-{compute.name}"
    state.mkdir(exist_ok=True)
    settings: dict[str, dict[str, object]] = {
        "DEFAULT": {
            "host": compute.host,
            "state_path": state,
            "compute_driver": compute.driver,
            "instances_path": compute.instances,
            # Nova warns when these differ: with native threads one limit holds both.
            "max_concurrent_builds": 5,
            "max_concurrent_snapshots": 5,
        },
        "libvirt": {"connection_uri": compute.uri, "virt_type": "qemu"},
    }
    for section, options in compute.settings.items():
        settings.setdefault(section, {}).update(options)
    extra = write_conf(conf.parent / f"{compute.service}.conf", settings)
    services.start(
        compute.service,
        [str(BIN / "nova-compute"), "--config-file", str(conf), "--config-file", str(extra)],
    )


def discover_hosts(services: Services, conf: Path) -> None:
    services.run("nova-manage", [*_manage(conf), "cell_v2", "discover_hosts"])
