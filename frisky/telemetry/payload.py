"""The ``telemetry`` field of a worker's heartbeat: its shape, checked as hostile input.

A worker builds it (:meth:`frisky.worker.server.Worker._telemetry`, buckets from
:class:`~frisky.telemetry.ship.Shipper`); the scheduler runs :func:`parse` on it before
anything is kept. Anything that does not fit raises :class:`BadTelemetry` naming the
first fault; the scheduler then drops the payload (one rate-limited log line, a counter)
and keeps the heartbeat itself. Sizes are bounded here, so a peer cannot grow the
scheduler's history by sending more.

Shape (times are wall-clock seconds since the epoch)::

    {"v": 1, "time": t,
     "buckets":  [[second, {span name: [count, seconds, bytes]}], ...],
     "prefixes": [[second, {key prefix: [done, seconds, bytes, errors]}], ...],
     "spans":    [[name, start, stop, prefix, nbytes], ...],          # <= 200
     "spans_total": n, "lost": n,
     "memory": {"managed", "unmanaged", "spilled", "in_transit", "recv_pool", "rss", "limit",
                "target_at", "spill_at", "pause_at", "terminate_at": bytes, "paused": bool},
     "network": {"recv_bytes", "sent_bytes"}, "disk": {"read_bytes", "written_bytes"},  # totals
     "executing": [[key, start], ...],
     "transfers": [[key, from address, nkeys, bytes, seconds], ...],  # finished since the last
     "in_flight": [[key, from address, nkeys, bytes so far, start], ...],
     "cpu_seconds": s}
"""

from __future__ import annotations

import math

MAX_SECONDS = 120  # buckets per heartbeat (a worker silent for two minutes is dead anyway)
MAX_NAMES = 256  # span names or prefixes in one bucket
MAX_STR = 200  # characters of a name, prefix, key or address
MAX_SPANS = 200
MAX_EXECUTING = 1024
MAX_TRANSFERS = 1024
MEMORY_FIELDS = ("managed", "unmanaged", "spilled", "in_transit", "recv_pool", "rss", "limit",
                 "target_at", "spill_at", "pause_at", "terminate_at")


class BadTelemetry(ValueError):
    """A telemetry payload that does not parse; the message says why."""


def _fail(why: str) -> None:
    raise BadTelemetry(why)


def _num(x, what: str) -> float:
    if (type(x) is not int and type(x) is not float) or not math.isfinite(x) or x < 0:
        _fail(f"{what} must be a finite non-negative number")
    return x


def _int(x, what: str) -> int:
    if type(x) is not int or x < 0:
        _fail(f"{what} must be a non-negative int")
    return x


def _str(x, what: str) -> str:
    if type(x) is not str or len(x) > MAX_STR:
        _fail(f"{what} must be a str of at most {MAX_STR} characters")
    return x


def _list(x, what: str, most: int) -> list:
    if type(x) is not list:
        _fail(f"{what} must be a list")
    if len(x) > most:
        _fail(f"{what} has {len(x)} entries, more than {most}")
    return x


def _dict(x, what: str) -> dict:
    if type(x) is not dict:
        _fail(f"{what} must be a map")
    return x


def _row(x, what: str, kinds: str) -> list:
    """A list whose items are, by position: s(tr), n(umber), i(nt)."""
    if type(x) is not list or len(x) != len(kinds):
        _fail(f"{what} must be a list of {len(kinds)}")
    for i, (v, k) in enumerate(zip(x, kinds)):
        if k == "s":
            _str(v, f"{what}[{i}]")
        elif k == "n":
            _num(v, f"{what}[{i}]")
        else:
            _int(v, f"{what}[{i}]")
    return x


def _buckets(x, what: str, kinds: str) -> list:
    for b in _list(x, what, MAX_SECONDS):
        if type(b) is not list or len(b) != 2:
            _fail(f"{what} entries must be [second, map]")
        _int(b[0], f"{what} second")
        entries = _dict(b[1], f"{what} map")
        if len(entries) > MAX_NAMES:
            _fail(f"{what}: more than {MAX_NAMES} names in one second")
        for name, v in entries.items():
            _str(name, f"{what} name")
            _row(v, f"{what}[{name!r:.40}]", kinds)
    return x


def parse(t) -> dict:
    """Check a heartbeat's telemetry field; return it (the same object) or raise BadTelemetry."""
    _dict(t, "telemetry")
    if t.get("v") != 1:
        _fail("telemetry version must be 1")
    _num(t.get("time"), "time")
    _buckets(t.get("buckets"), "buckets", "nnn")
    _buckets(t.get("prefixes"), "prefixes", "nnnn")
    for s in _list(t.get("spans"), "spans", MAX_SPANS):
        _row(s, "span", "snnsn")
        if s[2] < s[1]:
            _fail("a span stops before it starts")
    _int(t.get("spans_total"), "spans_total")
    _int(t.get("lost"), "lost")
    mem = _dict(t.get("memory"), "memory")
    for k in MEMORY_FIELDS:
        _num(mem.get(k), f"memory.{k}")
    if type(mem.get("paused")) is not bool:
        _fail("memory.paused must be a bool")
    for group, fields in (("network", ("recv_bytes", "sent_bytes")), ("disk", ("read_bytes", "written_bytes"))):
        d = _dict(t.get(group), group)
        for k in fields:
            _num(d.get(k), f"{group}.{k}")
    for e in _list(t.get("executing"), "executing", MAX_EXECUTING):
        _row(e, "executing entry", "sn")
    for e in _list(t.get("transfers"), "transfers", MAX_TRANSFERS):
        _row(e, "transfer", "ssinn")
    for e in _list(t.get("in_flight"), "in_flight", MAX_TRANSFERS):
        _row(e, "in-flight transfer", "ssinn")
    _num(t.get("cpu_seconds"), "cpu_seconds")
    return t
