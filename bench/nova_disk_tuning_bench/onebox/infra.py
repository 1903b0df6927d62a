"""The services Nova needs around it: MariaDB, RabbitMQ, placement, glance, a Neutron stand-in.

Each is a private instance under the work directory on a loopback port of its
own; none is the machine's system service, and nothing here reads or writes
``/etc/mysql``, ``/etc/rabbitmq`` or ``/var/lib`` (MariaDB runs with
``--no-defaults``, RabbitMQ with every path and its Erlang cookie moved).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import urllib.request
from pathlib import Path

from nova_disk_tuning_bench.onebox.procs import OneboxError, Services, free_port

BIN = Path(sys.prefix) / "bin"
# Nova's three databases and placement's.
DATABASES = ("nova_api", "nova_cell0", "nova", "placement")
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
# The Debian package of each program the box runs (bindep.txt's onebox
# profile installs them; mariadb-client comes with mariadb-server).
PACKAGES = {
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-server",
    str(RABBITMQ_SERVER): "rabbitmq-server",
}
GUNICORN_HOOKS = "python:nova_disk_tuning_bench.onebox.gunicorn_hooks"


@dataclasses.dataclass
class Endpoints:
    """Where the services answer."""

    mysql_port: int = 0
    amqp_port: int = 0
    placement: str = ""
    glance: str = ""
    neutron: str = ""

    def db(self, name: str) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.mysql_port}/{name}?charset=utf8"

    @property
    def transport_url(self) -> str:
        return f"rabbit://guest:guest@127.0.0.1:{self.amqp_port}/"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise OneboxError(f"{name} is not installed: install the Debian package {PACKAGES[name]}")
    return path


def gunicorn(services: Services, name: str, app: str, port: int, env: dict[str, str]) -> None:
    """Serve the WSGI ``app`` (module:attribute) on ``port`` with one threaded worker."""
    services.start(
        name,
        [
            str(BIN / "gunicorn"), "-c", GUNICORN_HOOKS, "--bind", f"127.0.0.1:{port}",
            "--workers", "1", "--threads", "8", "--timeout", "300", app,
        ],
        env,
    )  # fmt: skip


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as answer:
        return bool(answer.status < 500)


def start_mariadb(services: Services, ends: Endpoints) -> None:
    root = services.workdir / "mariadb"
    data = root / "data"
    mariadbd = _binary("mariadbd")
    data.mkdir(parents=True)
    services.run(
        "mariadb-install-db",
        [
            _binary("mariadb-install-db"), "--no-defaults",
            f"--datadir={data}", "--user=root", "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
    )  # fmt: skip
    ends.mysql_port = free_port()
    # Durability is of no use to a throw-away box; flushing the log once a
    # second instead of at every commit makes Nova's schema set-up several
    # times faster on this machine's disk.
    services.start(
        "mariadb",
        [
            mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={root / 'sock'}",
            f"--pid-file={root / 'mariadb.pid'}", "--bind-address=127.0.0.1",
            f"--port={ends.mysql_port}", "--user=root", "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=0", "--innodb-buffer-pool-size=128M",
            "--max-connections=500",
        ],
    )  # fmt: skip
    services.wait_port("mariadb", ends.mysql_port)
    create = " ".join(f"CREATE DATABASE {name};" for name in DATABASES)
    services.run(
        "mariadb-create",
        [_binary("mariadb"), "--no-defaults", f"--socket={root / 'sock'}",
         "-u", "root", "-e", create],
    )  # fmt: skip


def start_rabbitmq(services: Services, ends: Endpoints) -> None:
    if not RABBITMQ_SERVER.exists():
        raise OneboxError(
            f"{RABBITMQ_SERVER} is missing: install the Debian package rabbitmq-server"
        )
    root = services.workdir / "rabbitmq"
    root.mkdir()
    (root / "enabled_plugins").write_text("[].\n")
    (root / "rabbitmq-env.conf").write_text("")
    ends.amqp_port = free_port()
    env = {
        "HOME": str(root),  # the Erlang cookie
        "RABBITMQ_NODENAME": f"onebox{ends.amqp_port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(ends.amqp_port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        # A private epmd: the system's (if any) neither sees nor keeps this node.
        "ERL_EPMD_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
        "RABBITMQ_LOG_BASE": str(root / "log"),
        "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
        "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
        "RABBITMQ_LOGS": str(root / "log" / "rabbit.log"),
    }
    services.start("rabbitmq", [str(RABBITMQ_SERVER)], env)
    services.wait_port("rabbitmq", ends.amqp_port, timeout=180)


def write_conf(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    """An oslo.config file from ``{section: {option: value}}``."""
    lines = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in options.items())
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def start_placement(services: Services, ends: Endpoints) -> None:
    conf_dir = services.workdir / "placement"
    write_conf(
        conf_dir / "placement.conf",
        {
            "DEFAULT": {"debug": "False"},
            "api": {"auth_strategy": "noauth2"},
            "placement_database": {"connection": ends.db("placement")},
        },
    )
    services.run(
        "placement-manage",
        [str(BIN / "placement-manage"), "--config-file", str(conf_dir / "placement.conf"),
         "db", "sync"],
    )  # fmt: skip
    port = free_port()
    ends.placement = f"http://127.0.0.1:{port}"
    gunicorn(
        services, "placement", "placement.wsgi.api:application", port,
        {"OS_PLACEMENT_CONFIG_DIR": str(conf_dir)},
    )  # fmt: skip
    services.wait("placement", lambda: http_ok(ends.placement + "/"), 120, "answering")


def start_glance(services: Services, ends: Endpoints) -> Path:
    """Glance with a file store; the directory its images are stored in."""
    conf_dir = services.workdir / "glance"
    images = conf_dir / "images"
    for sub in ("images", "staging", "tasks"):
        (conf_dir / sub).mkdir(parents=True)
    paste = Path(sys.prefix) / "etc" / "glance" / "glance-api-paste.ini"
    if not paste.exists():
        raise OneboxError(f"{paste} is missing: install glance (make nova-demo does)")
    write_conf(
        conf_dir / "glance-api.conf",
        {
            "DEFAULT": {"enabled_backends": "fs:file", "debug": "False"},
            "database": {"connection": f"sqlite:///{conf_dir / 'glance.sqlite'}"},
            # No flavor: glance's unauthenticated pipeline.
            "paste_deploy": {"config_file": paste},
            "glance_store": {"default_backend": "fs"},
            "fs": {"filesystem_store_datadir": images},
            "os_glance_staging_store": {"filesystem_store_datadir": conf_dir / "staging"},
            "os_glance_tasks_store": {"filesystem_store_datadir": conf_dir / "tasks"},
            "oslo_concurrency": {"lock_path": conf_dir / "locks"},
            # The unauthenticated context is an admin without a project, which
            # glance's secure defaults refuse to let create an image; its legacy
            # rules let it.
            "oslo_policy": {"enforce_new_defaults": "False", "enforce_scope": "False"},
        },
    )
    # Glance warns when it finds no file of custom image properties (its wheel
    # ships none); the box's images need none.
    (conf_dir / "schema-image.json").write_text("{}\n")
    services.run(
        "glance-manage",
        [str(BIN / "glance-manage"), "--config-file", str(conf_dir / "glance-api.conf"),
         "db_sync"],
    )  # fmt: skip
    port = free_port()
    ends.glance = f"http://127.0.0.1:{port}"
    gunicorn(
        services, "glance", "glance.wsgi.api:application", port,
        {"OS_GLANCE_CONFIG_DIR": str(conf_dir)},
    )  # fmt: skip
    services.wait("glance", lambda: http_ok(ends.glance + "/versions"), 120, "answering")
    return images


def start_neutron_standin(services: Services, ends: Endpoints) -> None:
    port = free_port()
    ends.neutron = f"http://127.0.0.1:{port}"
    services.start(
        "neutron-standin",
        [sys.executable, "-m", "nova_disk_tuning_bench.onebox.neutron_standin", str(port)],
    )
    services.wait("neutron-standin", lambda: http_ok(ends.neutron + "/"), 30, "answering")
