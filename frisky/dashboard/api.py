"""The ``/api/v1`` endpoints: each a function of the scheduler's last snapshot, the
telemetry history and the query, returning a JSON-able dict.

They run on the dashboard's HTTP threads and read only the snapshot (plain data the
scheduler's loop copied, :mod:`frisky.scheduler.snapshot`) and the
:class:`~frisky.telemetry.history.History` (under its lock); never live scheduler state.
The shapes are fixed by ``frisky/telemetry/api_v1.schema.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from frisky.telemetry import analysis
from frisky.telemetry.history import SECONDS, History

VERSION = 1
DEFAULT_SINCE = 60
MAX_SPANS = 10_000
MAX_TASKS = 5000
PROGRESS_WINDOW = 5  # seconds without a finished task (with tasks active) before "not progressing"
OUTLIER_FLOORS = {"rss": 64 << 20, "spilled": 16 << 20, "exec_seconds_per_call": 0.01, "cpu": 0.2}


class ApiError(Exception):
    """A request the API refuses: ``status`` (400, 404) and a message for the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------ query parsing
def _one(query: dict, name: str) -> str | None:
    v = query.get(name)
    if v is None:
        return None
    if len(v) != 1:
        raise ApiError(400, f"{name} given {len(v)} times")
    return v[0]


def _number(query: dict, name: str, default: float, lo: float, hi: float) -> float:
    raw = _one(query, name)
    if raw is None:
        return default
    try:
        v = float(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a number, not {raw[:40]!r}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ApiError(400, f"{name} must be between {lo:g} and {hi:g}, not {raw[:40]!r}")
    return v


def _check_params(query: dict, allowed: tuple) -> None:
    extra = sorted(set(query) - set(allowed))
    if extra:
        ok = ", ".join(allowed) or "none"
        raise ApiError(400, f"unknown query parameter {extra[0][:40]!r} (this endpoint takes: {ok})")


def _base(snap: dict) -> dict:
    return {"version": VERSION, "now": time.time()}


# ------------------------------------------------------------------ endpoints
def index(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ())
    return {**_base(snap), "endpoints": [f"/api/v1/{n}" for n in ENDPOINTS if n] + ["/api/v1/stream"]}


def _worker_rows(snap: dict, hist: History) -> list[dict]:
    """Each live worker: the scheduler's view joined with its last telemetry."""
    tele = {w["name"]: w for w in hist.worker_state()}
    now = time.time()
    rows = []
    for w in snap["workers"]:
        t = tele.get(w["name"], {})
        mem = dict(t.get("memory") or {})
        limit = w["memory_limit"] or mem.get("limit", 0) or 0
        memory = {k: int(mem.get(k, 0)) for k in ("managed", "unmanaged", "spilled", "in_transit", "recv_pool",
                                                   "rss", "target_at", "spill_at", "pause_at", "terminate_at")}
        memory["limit"] = int(limit)
        memory["used"] = memory["managed"] + memory["unmanaged"]
        paused = bool(mem.get("paused", False))
        status = "paused" if paused else ("running" if w["processing"] else "idle")
        executing = [{"key": k, "prefix": _prefix(k), "age": max(0.0, now - start)}
                     for k, start in t.get("executing", [])]
        rows.append({
            "name": w["name"], "address": w["address"], "host": w["host"], "pid": w["pid"],
            "nthreads": w["nthreads"], "status": status, "processing": w["processing"],
            "in_memory": w["in_memory"], "nbytes": w["nbytes"], "memory": memory,
            "network": {k: int(v) for k, v in (t.get("network") or {"recv_bytes": 0, "sent_bytes": 0}).items()},
            "disk": {k: int(v) for k, v in (t.get("disk") or {"read_bytes": 0, "written_bytes": 0}).items()},
            "cpu_seconds": float(t.get("cpu_seconds", 0.0)), "executing": executing,
            "in_flight": [{"key": e[0], "from": e[1], "to": w["address"], "nkeys": e[2], "bytes": e[3],
                           "age": max(0.0, now - e[4])} for e in t.get("in_flight", [])],
            "last_seen": float(t.get("last_seen", 0.0)), "spans_total": int(t.get("spans_total", 0)),
        })
    return rows


def _prefix(key: str) -> str:
    from frisky.telemetry.history import clean_prefix

    return clean_prefix(key.partition("-")[0])


def workers(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ())
    rows = _worker_rows(snap, hist)
    for r in rows:
        del r["in_flight"]
    return {**_base(snap), "workers": rows}


def _window(query: dict) -> float:
    return _number(query, "since", DEFAULT_SINCE, 1, SECONDS)


def overview(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ("since",))
    since = _window(query)
    rows = _worker_rows(snap, hist)
    counts = snap["counts"]
    tasks = dict(snap["tasks"])
    tasks["total_submitted"] = counts.get("submitted", 0)
    tasks["done"] = counts.get("finished", 0)
    paused = sum(r["status"] == "paused" for r in rows)
    idle = sum(r["status"] == "idle" for r in rows)
    mem = {k: sum(r["memory"][k] for r in rows) for k in ("managed", "unmanaged", "spilled", "in_transit",
                                                          "recv_pool", "limit")}
    mem["used"] = mem["managed"] + mem["unmanaged"]
    mem["peak"] = max(hist.peak_memory, mem["used"])
    t0, seconds = hist.span_series(since, col=1)
    _, calls = hist.span_series(since, col=0)
    _, nbytes = hist.span_series(since, col=2)
    length = len(next(iter(seconds.values()))) if seconds else 0
    comp = analysis.components(seconds, length)
    per_worker = hist.totals_by_worker(since)
    metrics = {}
    for r in rows:
        spans = per_worker.get(r["name"], {})
        ex = spans.get("worker.exec.call")
        m = {"rss": r["memory"]["rss"], "spilled": r["memory"]["spilled"]}
        if ex and ex[0]:
            m["exec_seconds_per_call"] = ex[1] / ex[0]
        metrics[r["name"]] = m
    return {
        **_base(snap),
        "started": snap["started"],
        "wall_seconds": max(0.0, time.time() - snap["started"]),
        "workers": {"total": len(rows), "idle": idle, "paused": paused, "busy": len(rows) - idle - paused},
        "tasks": tasks,
        "spans_total": hist.spans_total,
        "memory": mem,
        "spilled_bytes": sum(r["disk"]["written_bytes"] for r in rows),
        "unspilled_bytes": sum(r["disk"]["read_bytes"] for r in rows),
        "network": {k: sum(r["network"][k] for r in rows) for k in ("recv_bytes", "sent_bytes")},
        "disk": {k: sum(r["disk"][k] for r in rows) for k in ("read_bytes", "written_bytes")},
        "components": {"t0": t0, "step": 1, "series": comp, "totals": {c: sum(v) for c, v in comp.items()}},
        "top_spans": analysis.top_spans(seconds, calls, nbytes),
        "outliers": analysis.outliers(metrics, OUTLIER_FLOORS),
        "dropped_telemetry": snap["dropped_telemetry"],
    }


def prefixes(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ())
    stats = hist.prefix_stats()
    rows = {}
    for p, states in snap["prefixes"].items():
        rows[p] = {"prefix": p, **states, "done": 0, "compute_seconds": 0.0, "bytes": 0, "errors": 0}
    for p, (done, seconds, nbytes, errors, _) in stats.items():
        row = rows.get(p)
        if row is None:
            row = rows[p] = {"prefix": p, "waiting": 0, "queued": 0, "processing": 0, "memory": 0, "erred": 0,
                             "released": 0, "done": 0, "compute_seconds": 0.0, "bytes": 0, "errors": 0}
        row["done"] = int(done)
        row["compute_seconds"] = float(seconds)
        row["bytes"] = int(nbytes)
        row["errors"] = int(errors)
    out = sorted(rows.values(), key=lambda r: (-r["compute_seconds"], r["prefix"]))
    return {**_base(snap), "prefixes": out}


def transfers(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ("limit",))
    limit = int(_number(query, "limit", 20, 1, 1000))
    in_flight = []
    for r in _worker_rows(snap, hist):
        in_flight.extend(r["in_flight"])
    in_flight.sort(key=lambda e: -e["age"])
    recent, totals = hist.recent_transfers()
    recent.sort(key=lambda e: -e[5])
    slowest = [{"key": k, "from": src, "to": dst, "nkeys": n, "bytes": int(b), "seconds": s,
                "bandwidth": b / s if s > 0 else 0.0, "time": t} for k, src, dst, n, b, s, t in recent[:limit]]
    return {**_base(snap), "in_flight": in_flight[:limit], "slowest": slowest,
            "totals": {"count": int(totals[0]), "bytes": int(totals[1]), "seconds": totals[2]}}


def clients(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ())
    return {**_base(snap), "clients": snap["clients"]}


def blocked(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ())
    rows = _worker_rows(snap, hist)
    tasks = snap["tasks"]
    active = tasks["waiting"] + tasks["queued"] + tasks["processing"]
    _, done, erred = hist.sched_series(PROGRESS_WINDOW)
    progressing = active == 0 or sum(done) + sum(erred) > 0
    stats = hist.prefix_stats()
    mean = {p: v[1] / v[0] for p, v in stats.items() if v[0]}
    facts = {
        "active": active, "progressing": progressing, "mean_seconds": mean,
        "workers": [{"name": r["name"], "paused": r["status"] == "paused", "processing": r["processing"],
                     "memory": r["memory"]["used"], "limit": r["memory"]["limit"]} for r in rows],
        "executing": [{**e, "worker": r["name"]} for r in rows for e in r["executing"]],
        **snap["facts"],
    }
    return {**_base(snap), **analysis.blocked(facts)}


def timeline(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ("view", "prefix", "worker", "since"))
    view = _one(query, "view") or "component"
    if view not in ("component", "detailed"):
        raise ApiError(400, f"view must be component or detailed, not {view[:40]!r}")
    since = _window(query)
    prefix = _one(query, "prefix")
    worker = _one(query, "worker")
    if worker is not None and worker not in {w["name"] for w in snap["workers"]} | set(hist.worker_names()):
        raise ApiError(400, f"no worker named {worker[:80]!r}")
    if prefix is None:
        t0, series = hist.span_series(since, worker)
    else:
        t0, series = _prefix_series(hist, since, prefix, worker)
    length = len(next(iter(series.values()))) if series else int(min(since, SECONDS))
    if view == "component":
        series = analysis.components(series, length)
    return {**_base(snap), "t0": t0, "step": 1, "view": view, "series": series}


def _prefix_series(hist: History, since: float, prefix: str, worker: str | None) -> tuple[int, dict]:
    """Per span name, the seconds of one prefix's spans: from the raw span ring (a sample)."""
    t0, slots = hist.window(since)
    n = len(slots)
    out: dict[str, list[float]] = {}
    for name, _src, _, start, stop, _ in hist.raw_spans(limit=200_000, since=t0, prefix=prefix, source=worker):
        i = int(stop) - t0
        if 0 <= i < n:
            out.setdefault(name, [0.0] * n)[i] += stop - start
    return t0, out


def spans(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ("name", "limit", "worker", "prefix"))
    name = _one(query, "name")
    limit = int(_number(query, "limit", 100, 1, MAX_SPANS))
    found = hist.raw_spans(name=name, limit=200_000, prefix=_one(query, "prefix"), source=_one(query, "worker"))
    stats = analysis.percentiles([s[4] - s[3] for s in found])
    rows = [{"name": n, "worker": src, "prefix": p, "start": a, "stop": b, "seconds": b - a, "bytes": int(nb)}
            for n, src, p, a, b, nb in found[:limit]]
    return {**_base(snap), "spans": rows, "stats": stats}


def stragglers(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ("since",))
    since = _window(query)
    return {**_base(snap), "since": since, "workers": analysis.stragglers(hist.totals_by_worker(since))}


def tasks(snap: dict, hist: History, query: dict) -> dict:
    _check_params(query, ("since", "limit"))
    since = _window(query)
    limit = int(_number(query, "limit", MAX_TASKS, 1, MAX_TASKS))
    found = hist.raw_spans(names=("worker.exec.call", "worker.exec.error"), limit=limit, since=time.time() - since)
    rows = [{"worker": src, "prefix": p, "start": a, "stop": b,
             "state": "memory" if n == "worker.exec.call" else "erred"} for n, src, p, a, b, _ in found]
    return {**_base(snap), "tasks": rows}


def tick(snap: dict, hist: History) -> dict:
    """One ``event: tick`` of ``/api/v1/stream``."""
    return {"version": VERSION, "now": time.time(), "overview": overview(snap, hist, {}),
            "workers": workers(snap, hist, {}), "prefixes": prefixes(snap, hist, {}),
            "clients": clients(snap, hist, {})}


ENDPOINTS: dict[str, Callable] = {
    "": index, "overview": overview, "workers": workers, "prefixes": prefixes, "transfers": transfers,
    "clients": clients, "blocked": blocked, "timeline": timeline, "spans": spans, "stragglers": stragglers,
    "tasks": tasks,
}
