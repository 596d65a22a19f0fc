"""``frisky observe workers``: each worker's state, memory, spill, network and what it runs."""

from __future__ import annotations

from frisky.observe.page import Context, Page
from frisky.observe.text import (
    bar,
    fmt_bytes,
    fmt_count,
    fmt_percent,
    fmt_seconds,
    fmt_size,
    plural,
    table,
)

SILENT = 5.0  # seconds without a heartbeat after which a worker is shown as silent


def _executing(w: dict) -> str:
    ex = sorted(w["executing"], key=lambda e: -float(e["age"]))
    if not ex:
        return "-"
    first = ex[0]
    more = f" +{len(ex) - 1}" if len(ex) > 1 else ""
    return f"{first['prefix']} {fmt_seconds(first['age'])}{more}"


def _status(w: dict, now: float) -> str:
    quiet = now - float(w["last_seen"])
    return f"silent {fmt_seconds(quiet)}" if quiet > SILENT else str(w["status"])


def render(data: dict, ctx: Context) -> str:
    page = Page(ctx)
    workers = sorted(data["workers"], key=lambda w: str(w["name"]))
    now = float(data["now"])
    used = sum(float(w["memory"]["used"]) for w in workers)
    limit = sum(float(w["memory"]["limit"]) for w in workers)
    paused = [w for w in workers if w["status"] == "paused"]
    page.add(f"{plural(len(workers), 'worker')} · {plural(sum(int(w['nthreads']) for w in workers), 'thread')} · "
             f"{len(paused)} paused · memory {fmt_bytes(used)} of {fmt_bytes(limit)} ({fmt_percent(used, limit)})",
             "bold")
    if not workers:
        page.add("no workers are connected", "red")
    rows = []
    for w in workers:
        m = w["memory"]
        frac = float(m["used"]) / float(m["limit"]) if float(m["limit"]) > 0 else 0.0
        rows.append([w["name"], _status(w, now), fmt_count(w["processing"]), fmt_count(w["in_memory"]),
                     f"{fmt_size(m['used']):>5} {fmt_percent(m['used'], m['limit']):>4} {bar(frac, 6)}",
                     fmt_size(m["spilled"]), fmt_size(w["network"]["recv_bytes"]),
                     fmt_size(w["network"]["sent_bytes"]), fmt_seconds(w["cpu_seconds"]), _executing(w)])
    if rows:
        page.add("")
        page.extend(table(["worker", "status", "run", "kept", "memory % limit", "spill", "in", "out", "cpu",
                           "running longest"], rows, right=(2, 3, 5, 6, 7, 8), flex=(9, 0)))
        page.add("run: tasks processing · kept: results held · in/out: network bytes · spill: bytes on disk",
                 "dim")
    hosts = {str(w["host"]) for w in workers}
    if len(hosts) > 1:
        page.add(f"on {len(hosts)} hosts: {', '.join(sorted(hosts))}", "dim")
    _hints(page, workers, paused, now)
    return page.render()


def _hints(page: Page, workers: list[dict], paused: list[dict], now: float) -> None:
    if paused:
        page.hint("blocked", why=f"paused workers hold tasks back ({len(paused)})")
    spilling = [w for w in workers if float(w["memory"]["spilled"]) > 0]
    if spilling:
        top = max(spilling, key=lambda w: float(w["memory"]["spilled"]))
        page.hint("timeline", "--view", "component", "--worker", top["name"],
                  why=f"worker {top['name']} spills: its time on disk vs compute")
    if len(workers) > 1:
        page.hint("stragglers", why="which worker is slower than its peers, and at what")
    if any(float(w["memory"]["in_transit"]) > 0 for w in workers):
        page.hint("transfers", why="data moving between workers now")
    page.hint("prefixes", why="progress and cost per kind of task")
