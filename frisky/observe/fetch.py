"""Where the dashboard is, and reading its JSON API (``/api/v1/...``).

Every failure is an :class:`ObserveError` whose message is one line saying what went
wrong and where: nothing answering, something that is not Frisky's API, bad JSON.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8787"
API = "/api/v1"
MAX_BODY = 256 * 1024 * 1024  # a reply bigger than this is not the API's (10000 spans are a few MB)


class ObserveError(Exception):
    """A one-line reason ``frisky observe`` cannot show a view."""


def normalize(url: str) -> str:
    """``"host:8787"`` -> ``"http://host:8787"``; a trailing ``/`` or ``/api/v1`` dropped."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ObserveError(f"not a dashboard URL: {url!r} (give http://host:port)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ObserveError(f"not a dashboard URL: {url!r} (bad port)") from None
    path = parts.path.rstrip("/")
    path = path.removesuffix(API).rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _connection_file() -> str | None:
    """The connection file to read the dashboard from: ``FRISKY_CONNECTION``, then
    ``FRISKY_SCHEDULER`` when it names a file, then ``frisky.json`` here if it exists."""
    from frisky import config
    from frisky.deploy.launch import connection

    named = config.get("connection")
    if named:
        return named
    scheduler = config.get("scheduler")
    if scheduler and connection.is_file_address(scheduler):
        return scheduler
    return connection.DEFAULT if os.path.exists(connection.DEFAULT) else None


def resolve_url(arg: str | None = None) -> str:
    """The dashboard URL: ``arg``, else ``FRISKY_DASHBOARD``, else the connection file's
    ``"dashboard"``, else :data:`DEFAULT_URL`."""
    from frisky import config

    if arg:
        return normalize(arg)
    env = config.get("dashboard")
    if env:
        return normalize(env)
    path = _connection_file()
    if path:
        from frisky.deploy.launch import connection

        try:
            doc = connection.load(path)
        except ValueError as e:
            raise ObserveError(str(e)) from None
        dashboard = doc.get("dashboard")
        if not isinstance(dashboard, str) or not dashboard:
            raise ObserveError(f"connection file {path!r} names no dashboard (was the cluster started "
                               "without one?); give the URL")
        return normalize(dashboard)
    return DEFAULT_URL


def get(url: str, endpoint: str, params: dict[str, Any] | None = None, timeout: float = 10.0) -> dict:
    """GET ``url/api/v1/endpoint?params`` and return its JSON object (``"version": 1``)."""
    query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
    full = f"{url}{API}/{endpoint}" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(full, timeout=timeout) as reply:
            body = reply.read(MAX_BODY + 1)
    except urllib.error.HTTPError as e:
        why = _reason(e)
        if why is None and e.code == 404:  # a server, but no API v1 there
            raise ObserveError(f"no Frisky API v1 at {url} (HTTP 404 for {API}/{endpoint}); is it a Frisky "
                               "dashboard?") from None
        raise ObserveError(f"{full}: HTTP {e.code} {why or e.reason}") from None
    except urllib.error.URLError as e:
        why = getattr(e.reason, "strerror", None) or str(e.reason)
        raise ObserveError(f"no Frisky dashboard answers at {url} ({why}); start a cluster with a "
                           "dashboard or give its URL") from None
    except (OSError, ValueError) as e:  # timeout, reset, a malformed URL http.client refused
        raise ObserveError(f"cannot read {full}: {e}") from None
    if len(body) > MAX_BODY:
        raise ObserveError(f"{full}: reply larger than {MAX_BODY >> 20} MiB; not Frisky's API")
    try:
        data = json.loads(body)
    except ValueError as e:
        raise ObserveError(f"{full} did not return JSON ({e}); is {url} a Frisky dashboard?") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ObserveError(f"{full} is not Frisky's API v1 (no \"version\": 1 in its reply)")
    return data


def _reason(error: urllib.error.HTTPError) -> str | None:
    """The API's own ``{"error": ...}`` when it sent one."""
    try:
        doc = json.loads(error.read(65536))
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
    except (OSError, ValueError):  # no body, or not JSON: the status line says enough
        pass
    return None
