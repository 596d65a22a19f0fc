"""Pure analysis behind the observability API: plain data in, plain data out, no I/O.

Components of time, the costliest span types, workers unlike their peers (``outliers``),
workers slower than the median per span type (``stragglers``), and why nothing progresses
(``blocked``).
"""

from __future__ import annotations

import statistics

COMPONENTS = ("compute", "network", "disk", "scheduler", "other")
LONG_RUNNING_MIN = 3.0  # seconds a task runs before ``blocked`` names it (and...
LONG_RUNNING_FACTOR = 5.0  # ...this many times its prefix's mean, when that is known)
STRAGGLER_RATIO = 1.5  # per-call time over the median worker's that counts as a deviation
OUTLIER_RATIO = 2.0  # a worker's metric over the median (and over OUTLIER_FLOOR) that is named
EXAMPLES = 5


def component(name: str) -> str:
    """The component a span name belongs to (``worker.exec.*`` is compute, ...)."""
    if name.startswith("worker.exec."):
        return "compute"
    if name.startswith(("tcp.", "worker.transfer.")):
        return "network"
    if name.startswith("spill."):
        return "disk"
    if name.startswith("scheduler."):
        return "scheduler"
    return "other"


def components(series: dict[str, list[float]], length: int) -> dict[str, list[float]]:
    """Per-span-name series folded into the five components (each ``length`` long).
    ``worker.exec.error`` and ``worker.paused`` are not time at work and are left out."""
    out = {c: [0.0] * length for c in COMPONENTS}
    for name, values in series.items():
        if name in ("worker.paused", "worker.exec.error"):
            continue
        acc = out[component(name)]
        for i, v in enumerate(values[:length]):
            acc[i] += v
    return out


def top_spans(seconds: dict[str, list[float]], counts: dict[str, list[float]], nbytes: dict[str, list[float]],
              k: int = 8) -> list[dict]:
    """The ``k`` span names with the most seconds in the window, costliest first."""
    rows = []
    for name, values in seconds.items():
        total = sum(values)
        if total <= 0 and not sum(counts.get(name, ())):
            continue
        rows.append({"name": name, "seconds": total, "count": int(sum(counts.get(name, ()))),
                     "bytes": int(sum(nbytes.get(name, ()))), "series": values})
    rows.sort(key=lambda r: -r["seconds"])
    return rows[:k]


def percentiles(values: list[float]) -> dict:
    """``{"count", "p50", "p90", "p99", "max"}`` of ``values`` (nearest rank; zeros if empty)."""
    if not values:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    v = sorted(values)
    n = len(v)

    def rank(q: float) -> float:
        return v[min(n - 1, max(0, int(q * n + 0.5) - 1))]

    return {"count": n, "p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": v[-1]}


def stragglers(per_worker: dict[str, dict[str, list]], min_calls: int = 1) -> list[dict]:
    """Workers ranked by excess seconds over the median worker, per span type.

    ``per_worker``: ``{worker: {span name: [calls, seconds, ...]}}`` over one window. For
    each span type the median worker's seconds per call is the yardstick; a worker's excess
    is the sum over span types of ``calls * (its per-call - median per-call)`` where positive.
    Deviations (per-call ratio over :data:`STRAGGLER_RATIO`) are named, largest first.
    """
    per_call: dict[str, dict[str, tuple[float, float]]] = {}
    for w, spans in per_worker.items():
        for name, row in spans.items():
            if name in ("worker.paused",) or row[0] < min_calls:
                continue
            per_call.setdefault(name, {})[w] = (row[1] / row[0], row[0])
    out = {w: {"worker": w, "excess_seconds": 0.0, "deviations": []} for w in per_worker}
    for name, by_worker in per_call.items():
        if len(by_worker) < 2:
            continue
        median = statistics.median(v[0] for v in by_worker.values())
        for w, (pc, calls) in by_worker.items():
            excess = (pc - median) * calls
            if excess <= 0:
                continue
            out[w]["excess_seconds"] += excess
            ratio = pc / median if median > 0 else float("inf")
            if ratio >= STRAGGLER_RATIO:
                out[w]["deviations"].append({
                    "span": name, "worker_seconds_per_call": pc, "median_seconds_per_call": median,
                    "ratio": ratio if ratio != float("inf") else 1e9, "calls": int(calls),
                    "excess_seconds": excess,
                })
    rows = list(out.values())
    for r in rows:
        r["deviations"].sort(key=lambda d: -d["excess_seconds"])
    rows.sort(key=lambda r: -r["excess_seconds"])
    return rows


def outliers(metrics: dict[str, dict[str, float]], floors: dict[str, float] | None = None) -> list[dict]:
    """Workers whose metric is far from the other workers' median.

    ``metrics``: ``{worker: {metric: value}}``; ``floors``: per metric, a value below which
    nothing is remarkable (a worker at 3 MB against a median of 1 MB is fine). Needs at
    least three workers to know what is usual; returns ``[{"worker", "metric", "value",
    "median", "note"}]``, the largest ratio first.
    """
    floors = floors or {}
    if len(metrics) < 3:
        return []
    names = {m for d in metrics.values() for m in d}
    out = []
    for m in names:
        values = {w: d[m] for w, d in metrics.items() if m in d}
        if len(values) < 3:
            continue
        med = statistics.median(values.values())
        for w, v in values.items():
            if v <= floors.get(m, 0.0):
                continue
            if v > OUTLIER_RATIO * med:
                ratio = v / med if med > 0 else float("inf")
                times = f"{ratio:.1f}x" if ratio != float("inf") else "far above"
                out.append({"worker": w, "metric": m, "value": v, "median": med,
                            "note": f"{m} {times} the median worker's", "_r": ratio})
    out.sort(key=lambda r: -min(r["_r"], 1e9))
    for r in out:
        del r["_r"]
    return out


def blocked(facts: dict) -> dict:
    """Why tasks wait, as ``{"progressing", "reasons": [{"kind", "count", "examples", "note"}]}``.

    ``facts`` (plain data the scheduler and the workers' telemetry gave):
    ``active`` (tasks waiting + queued + processing), ``progressing`` (a task finished
    recently, or nothing is active), ``workers`` (live workers: ``name``, ``paused``,
    ``processing``, ``memory`` used and ``limit``), ``executing`` (``key``, ``prefix``,
    ``worker``, ``age``), ``mean_seconds`` (per prefix), and the scheduler's scans ``lost``,
    ``missing``, ``upstream``, ``unplaced`` (each ``{"count", "examples"}``).
    """
    reasons = []
    active = facts.get("active", 0)
    workers = facts.get("workers", [])
    if active and not workers:
        reasons.append({"kind": "no-workers", "count": active, "examples": [],
                        "note": f"{active} tasks to run and no worker connected"})
    paused = [w for w in workers if w.get("paused")]
    if paused:
        reasons.append({
            "kind": "paused-worker", "count": len(paused),
            "examples": [{"worker": w["name"], "processing": w.get("processing", 0), "memory": w.get("memory", 0),
                          "limit": w.get("limit", 0)} for w in paused[:EXAMPLES]],
            "note": "over their memory pause threshold: they start no task until memory falls"})
    un = facts.get("unplaced", {})
    if un.get("count"):
        reasons.append({"kind": "no-matching-worker", "count": un["count"], "examples": un["examples"][:EXAMPLES],
                        "note": "restricted to workers that are not connected"})
    mean = facts.get("mean_seconds", {})
    long = []
    for e in facts.get("executing", []):
        m = mean.get(e.get("prefix"))
        limit = max(LONG_RUNNING_MIN, LONG_RUNNING_FACTOR * m) if m else LONG_RUNNING_MIN
        if e["age"] >= limit:
            long.append(e)
    if long:
        long.sort(key=lambda e: -e["age"])
        reasons.append({"kind": "long-running", "count": len(long),
                        "examples": [{"key": e["key"], "worker": e["worker"], "age": e["age"]}
                                     for e in long[:EXAMPLES]],
                        "note": f"running for at least {LONG_RUNNING_MIN:g} s and "
                                f"{LONG_RUNNING_FACTOR:g}x their prefix's mean"})
    for kind, fact, note in (
            ("missing-dependency", "missing", "a dependency is gone (forgotten or erred) and will not come back"),
            ("lost-dependency", "lost", "a dependency's data was lost with its worker and is being recomputed"),
            ("erred-upstream", "upstream", "erred because a task they depend on erred")):
        f = facts.get(fact, {})
        if f.get("count"):
            reasons.append({"kind": kind, "count": f["count"], "examples": f["examples"][:EXAMPLES], "note": note})
    return {"progressing": bool(facts.get("progressing", True)), "reasons": reasons}
