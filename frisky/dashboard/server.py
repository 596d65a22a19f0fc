"""The dashboard's HTTP server: the ``/api/v1`` JSON API, its live stream, and the pages.

One stdlib ``ThreadingHTTPServer`` thread (plus one thread per open request). It never
reads live scheduler state: the scheduler's loop hands it a new snapshot about once a
second (:meth:`Dashboard.publish`, plain data built by :mod:`frisky.scheduler.snapshot`),
and the telemetry history keeps its own lock.

- ``GET /api/v1/...``: the endpoints of :mod:`frisky.dashboard.api` (JSON; 400 for a bad
  query, 404 for an unknown path, both ``{"error": ...}``);
- ``GET /api/v1/stream``: Server-Sent Events, one ``event: tick`` per snapshot (≤ 1 s);
- ``GET /`` and ``/static/<file>``: the pages, from ``frisky/dashboard/static/``;
- ``GET /json/info``: the scheduler's ``info`` (as ``Client.scheduler_info()`` gives it).
"""

from __future__ import annotations

import errno
import json
import logging
import mimetypes
import os
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from frisky import config
from frisky.dashboard import api
from frisky.telemetry.history import History

log = logging.getLogger("frisky.dashboard")
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TICK = 1.0  # seconds between stream ticks at most
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
          ".json": "application/json", ".png": "image/png", ".ico": "image/x-icon"}


def parse_address(address: str) -> tuple[str, int]:
    """``":8787"``, ``"8787"``, ``"host:port"`` -> (host, port); 127.0.0.1 unless a host is given."""
    address = str(address).strip()
    if address.startswith("http://"):
        address = address[len("http://"):]
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"dashboard address {address!r} must be [host]:port") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"dashboard port {number} is outside 0-65535")
    return (host or config.get("host")), number


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # an open stream must not keep the process alive
    allow_reuse_address = False  # 8787 taken means taken: fall back to a free port


class Dashboard:
    """The HTTP server thread. ``publish`` (scheduler loop) replaces the snapshot."""

    def __init__(self, address: str, history: History | None = None) -> None:
        self.history = history if history is not None else History()
        self.snap: dict | None = None
        self.info: dict = {}
        self.stopping = False
        self.cond = threading.Condition()
        self.generation = 0
        host, port = parse_address(address)
        try:
            self.httpd = _Server((host, port), self._handler())
        except OSError as e:
            if e.errno != errno.EADDRINUSE or port == 0:
                raise
            self.httpd = _Server((host, 0), self._handler())
            log.warning("dashboard port %d is taken; serving the dashboard on port %d instead", port,
                        self.httpd.server_address[1])
        shown = host if host not in ("", "0.0.0.0") else "127.0.0.1"
        self.address = f"http://{shown}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="frisky-dashboard", daemon=True)
        self.thread.start()

    def publish(self, snap: dict, info: dict) -> None:
        """A new snapshot (built on the scheduler's loop; never mutated after this)."""
        with self.cond:
            self.snap = snap
            self.info = info
            self.generation += 1
            self.cond.notify_all()

    def wait_tick(self, generation: int, timeout: float) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.generation != generation or self.stopping, timeout)
            return self.generation

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        # shutdown() waits for serve_forever to look at its flag, which it does only between
        # polls (0.2 s): wake it with a connection of our own so a cluster closes at once
        done = threading.Thread(target=self.httpd.shutdown, name="frisky-dashboard-stop", daemon=True)
        done.start()
        host, port = self.httpd.server_address[:2]
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        while done.is_alive():
            try:
                socket.create_connection((host, port), timeout=0.2).close()
            except OSError:
                pass  # not reachable now: the poll still ends it
            done.join(0.01)
        self.httpd.server_close()

    # ------------------------------------------------------------------ requests
    def _handler(self):
        dash = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                try:
                    dash._get(self)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the reader left
                except Exception as e:  # noqa: BLE001 - our bug: answer 500, keep serving
                    log.exception("dashboard: %s failed", self.path[:200])
                    try:
                        dash._json(self, 500, {"error": f"internal error: {type(e).__name__}"})
                    except OSError:
                        return  # the reader left meanwhile

            def log_message(self, *args) -> None:
                pass  # requests are not worth a log line each

        return Handler

    def _get(self, req: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(req.path)
        path = url.path.rstrip("/") or "/"
        try:
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True, strict_parsing=False,
                                          max_num_fields=32)
        except ValueError as e:
            self._json(req, 400, {"error": f"bad query: {e}"})
            return
        if path == "/api/v1/stream":
            self._stream(req)
        elif path == "/api/v1" or path.startswith("/api/v1/"):
            name = path[len("/api/v1/"):] if path != "/api/v1" else ""
            fn = api.ENDPOINTS.get(name)
            if fn is None:
                self._json(req, 404, {"error": f"no endpoint {path[:100]!r}; GET /api/v1 lists them"})
                return
            snap = self.snap
            if snap is None:
                self._json(req, 503, {"error": "the scheduler has not published its state yet"})
                return
            try:
                body = fn(snap, self.history, query)
            except api.ApiError as e:
                self._json(req, e.status, {"error": e.message})
                return
            self._json(req, 200, body)
        elif path == "/json/info":
            self._json(req, 200, self.info)
        elif path in ("/", "/index.html"):
            self._file(req, "index.html")
        elif path.startswith("/static/"):
            self._file(req, path[len("/static/"):])
        else:
            self._json(req, 404, {"error": f"nothing at {path[:100]!r}"})

    def _json(self, req, status: int, body: dict) -> None:
        data = json.dumps(body, default=str, allow_nan=False).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Cache-Control", "no-store")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _file(self, req, name: str) -> None:
        path = os.path.realpath(os.path.join(STATIC, urllib.parse.unquote(name)))
        if not path.startswith(os.path.realpath(STATIC) + os.sep) or not os.path.isfile(path):
            self._json(req, 404, {"error": f"no file {name[:100]!r}"})
            return
        with open(path, "rb") as f:
            data = f.read()
        ext = os.path.splitext(path)[1]
        req.send_response(200)
        req.send_header("Content-Type", _TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _stream(self, req) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "text/event-stream")
        req.send_header("Cache-Control", "no-store")
        req.send_header("Connection", "close")
        req.end_headers()
        req.close_connection = True
        generation = -1
        while not self.stopping:
            generation = self.wait_tick(generation, TICK)
            snap = self.snap
            if self.stopping:
                return
            if snap is None:
                req.wfile.write(b": waiting for the scheduler\n\n")
            else:
                data = json.dumps(api.tick(snap, self.history), default=str, allow_nan=False)
                req.wfile.write(b"event: tick\ndata: " + data.encode() + b"\n\n")
            req.wfile.flush()


def start_dashboard(address: str, history: History | None = None) -> Dashboard:
    """Serve the dashboard at ``address`` (a taken port falls back to a free one, logged)."""
    return Dashboard(address, history)
