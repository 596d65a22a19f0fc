"""Host lists: ``--hosts h1,h2`` and hostfiles (``[user@]host[:port] [workers=N]`` a line)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_HOST = re.compile(r"^(?:(?P<user>[^@\s:]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@\s:\[\]]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class HostSpec:
    """One host to start processes on."""

    host: str
    user: str | None = None
    port: int | None = None
    workers: int | None = None  # None: one per core of that host

    @property
    def target(self) -> str:
        """What ssh is given: ``[user@]host``."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return self.target + (f":{self.port}" if self.port else "")


def parse_host(text: str, workers: int | None = None) -> HostSpec:
    """Parse ``[user@]host[:port]``; raise ``ValueError`` saying what is wrong."""
    m = _HOST.match(text.strip())
    if not m:
        raise ValueError(f"not a host: {text!r} (expected [user@]host[:port])")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    host = m["host"].strip("[]")
    return HostSpec(host, m["user"], port, workers)


def parse_hosts(text: str) -> list[HostSpec]:
    """``h1,h2,user@h3:2222``."""
    items = [t for t in (s.strip() for s in text.split(",")) if t]
    if not items:
        raise ValueError("no hosts given")
    return [parse_host(t) for t in items]


def parse_hostfile(text: str, name: str = "hostfile") -> list[HostSpec]:
    """One ``[user@]host[:port] [workers=N]`` a line; ``#`` starts a comment."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        first, *opts = line.split()
        workers = None
        for opt in opts:
            key, eq, value = opt.partition("=")
            if key != "workers" or not eq:
                raise ValueError(f"{name}:{n}: unknown option {opt!r} (only workers=N)")
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name}:{n}: workers must be a positive integer, not {value!r}")
            workers = int(value)
        try:
            out.append(parse_host(first, workers))
        except ValueError as e:
            raise ValueError(f"{name}:{n}: {e}") from None
    if not out:
        raise ValueError(f"{name}: no hosts")
    return out
