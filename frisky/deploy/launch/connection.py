"""The connection file ``frisky-launch`` writes (``frisky.json``, mode 0600): the scheduler's
address, the dashboard's URL and the client's keys. ``Client("frisky.json")`` reads it."""

from __future__ import annotations

import json
import os
from typing import Any

DEFAULT = "frisky.json"


def write(path: str, scheduler: str, *, dashboard: str | None = None, keys: dict | None = None) -> None:
    """Write the file readable by its owner only (it holds the client's secret key)."""
    doc = {"scheduler": scheduler, "dashboard": dashboard, "keys": keys}
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (json.dumps(doc, indent=1) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load(path: str) -> dict[str, Any]:
    """Read a connection file; ``ValueError`` saying what is wrong with it."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except OSError as e:
        raise ValueError(f"cannot read connection file {path!r}: {e.strerror}") from None
    except ValueError as e:
        raise ValueError(f"connection file {path!r} is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("scheduler"), str):
        raise ValueError(f"connection file {path!r} names no scheduler address")
    keys = doc.get("keys")
    if keys is not None and not isinstance(keys, dict):
        raise ValueError(f"connection file {path!r}: keys must be an object")
    return doc


def is_file_address(address: Any) -> bool:
    """Whether ``address`` names a connection file rather than a ZeroMQ endpoint."""
    return isinstance(address, (str, os.PathLike)) and "://" not in os.fspath(address)
