"""A Neutron stand-in on loopback: every list is empty, everything else is 404.

The one-box's servers have no network (``networks: none``), yet Nova still
lists their ports when it builds, refreshes or deletes them, and lists the
extensions Neutron has. ``python -m nova_disk_tuning_bench.onebox.neutron_standin PORT``
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        resource = path.rsplit("/", 1)[-1].removesuffix(".json")
        if path in ("", "/v2.0") or not resource:
            self._answer(200, {"versions": [{"id": "v2.0", "status": "CURRENT"}]})
        else:
            self._answer(200, {resource: []})

    def do_POST(self) -> None:
        self._answer(404, {"NeutronError": {"message": "not in the one-box stand-in"}})

    do_PUT = do_DELETE = do_POST

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")
        sys.stdout.flush()


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
