"""A small HTTP server on the scheduler: the cluster's state as JSON, and a page showing it.

``GET /json/info`` returns the scheduler's view (workers, task states, counts, each
worker's metrics and telemetry totals). The scheduler loop refreshes a snapshot on every
heartbeat, so the HTTP thread never touches live state.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from frisky import config

_PAGE = b"""<!doctype html><meta charset="utf-8"><title>Frisky</title>
<h1>Frisky scheduler</h1><pre id="info">loading...</pre>
<script>
async function tick() {
  const r = await fetch('/json/info');
  document.getElementById('info').textContent = JSON.stringify(await r.json(), null, 2);
}
tick(); setInterval(tick, 1000);
</script>
"""


def parse_address(address: str) -> tuple[str, int]:
    """``":8787"``, ``"8787"``, ``"host:port"`` -> (host, port); 127.0.0.1 unless a host is given."""
    host, _, port = address.rpartition(":")
    return (host or config.get("host")), int(port)


class Dashboard:
    """The HTTP server thread; ``snapshot`` is replaced by the scheduler loop."""

    def __init__(self, address: str) -> None:
        self.snapshot: dict = {}
        host, port = parse_address(address)
        dash = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/json/info"):
                    body, ctype = json.dumps(dash.snapshot, default=str).encode(), "application/json"
                elif self.path in ("/", "/index.html"):
                    body, ctype = _PAGE, "text/html"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.address = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="frisky-dashboard", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_dashboard(server, address: str) -> Dashboard:
    """Serve ``server``'s snapshot at ``address``."""
    dash = Dashboard(address)
    dash.snapshot = server.info_without_dashboard()
    return dash
