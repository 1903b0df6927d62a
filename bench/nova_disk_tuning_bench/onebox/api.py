"""The REST calls the one-box makes to Nova and glance, as an unauthenticated admin.

No Keystone: the headers are what keystonemiddleware would have set after
checking a token (:func:`nova.api_paste` takes the middleware out).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nova_disk_tuning_bench.onebox.procs import OneboxError

HEADERS = {
    "X-Auth-Token": "onebox",
    "X-User-Id": "onebox-user",
    "X-Project-Id": "onebox-project",
    "X-Roles": "admin,member,reader",
    "OpenStack-API-Version": "compute latest",
    "X-OpenStack-Nova-API-Version": "latest",
}


class Api:
    """A JSON client for one service's URL."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        data: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        for key, value in HEADERS.items():
            request.add_header(key, value)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=300) as answer:
                text = answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise OneboxError(f"{method} {self.url}{path}: HTTP {exc.code}: {detail}") from None
        return json.loads(text) if text.strip() else None


class Glance(Api):
    def upload(self, name: str, data: Path | bytes, disk_format: str, **properties: str) -> str:
        container = {"aki": "aki", "ari": "ari"}.get(disk_format, "bare")
        image = self.call(
            "POST",
            "/v2/images",
            {"name": name, "disk_format": disk_format, "container_format": container,
             **properties},
        )  # fmt: skip
        payload = data if isinstance(data, bytes) else data.read_bytes()
        self.call(
            "PUT", f"/v2/images/{image['id']}/file", data=payload,
            content_type="application/octet-stream",
        )  # fmt: skip
        return str(image["id"])

    def image(self, image_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v2/images/{image_id}"))

    def delete(self, image_id: str) -> None:
        self.call("DELETE", f"/v2/images/{image_id}")


class Nova(Api):
    def flavor(self, name: str, vcpus: int, disk: int, ephemeral: int, **specs: str) -> str:
        flavor = self.call(
            "POST",
            "/flavors",
            {"flavor": {"name": name, "ram": 512, "vcpus": vcpus, "disk": disk,
                        "OS-FLV-EXT-DATA:ephemeral": ephemeral}},
        )["flavor"]  # fmt: skip
        if specs:
            self.call("POST", f"/flavors/{flavor['id']}/os-extra_specs", {"extra_specs": specs})
        return str(flavor["id"])

    def server(self, server_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/servers/{server_id}")["server"])

    def boot(self, name: str, image: str, flavor: str, host: str) -> str:
        server = self.call(
            "POST",
            "/servers",
            {"server": {"name": name, "imageRef": image, "flavorRef": flavor,
                        "networks": "none", "host": host}},
        )["server"]  # fmt: skip
        return str(server["id"])

    def action(self, server_id: str, body: dict[str, Any]) -> Any:
        return self.call("POST", f"/servers/{server_id}/action", body)

    def wait(self, server_id: str, status: str, timeout: float = 600.0) -> dict[str, Any]:
        """Wait until the server has ``status`` and no task; fail at once on ERROR."""
        deadline = time.monotonic() + timeout
        while True:
            server = self.server(server_id)
            if server["status"] == "ERROR":
                fault = server.get("fault", {}).get("message", "no fault recorded")
                raise OneboxError(f"server {server_id} went to ERROR: {fault}")
            if server["status"] == status and not server.get("OS-EXT-STS:task_state"):
                return server
            if time.monotonic() > deadline:
                raise OneboxError(
                    f"server {server_id} is {server['status']} "
                    f"({server.get('OS-EXT-STS:task_state')}), not {status}, after {timeout:.0f} s"
                )
            time.sleep(0.25)

    def wait_gone(self, server_id: str, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.server(server_id)
            except OneboxError as exc:
                if "HTTP 404" in str(exc):
                    return
                raise
            if time.monotonic() > deadline:
                raise OneboxError(f"server {server_id} still exists {timeout:.0f} s after delete")
            time.sleep(0.25)

    def computes(self) -> dict[str, dict[str, Any]]:
        """nova-compute services by host."""
        services = self.call("GET", "/os-services?binary=nova-compute")["services"]
        return {s["host"]: s for s in services}

    def hypervisors(self) -> set[str]:
        found = self.call("GET", "/os-hypervisors")["hypervisors"]
        return {h["hypervisor_hostname"] for h in found}

    def only_enabled(self, host: str) -> None:
        """Let the scheduler pick only ``host`` (a same-host resize or an unshelve)."""
        for name, service in self.computes().items():
            want = "enabled" if name == host else "disabled"
            if service["status"] != want:
                self.call("PUT", f"/os-services/{service['id']}", {"status": want})
