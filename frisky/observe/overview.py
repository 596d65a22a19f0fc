"""``frisky observe overview``: the whole cluster on one screen.

State counts, memory and spill, where the time went per component as sparklines, the
costliest span types over time, and the workers unlike their peers.
"""

from __future__ import annotations

from frisky.observe.page import Context, Page
from frisky.observe.text import (
    active_window,
    fmt_bytes,
    fmt_count,
    fmt_percent,
    fmt_seconds,
    plural,
    sparkline,
)

COMPONENTS = ("compute", "network", "disk", "scheduler", "other")
LABEL = 10
SPARK = 60


def metric_value(metric: str, value: object) -> str:
    """A metric's value in its unit, told by its name (``*bytes*``, ``*seconds*``)."""
    name = str(metric)
    if "bytes" in name or "memory" in name:
        return fmt_bytes(value)
    if "seconds" in name or name.endswith("_s") or "time" in name:
        return fmt_seconds(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return fmt_count(value)


def window(data: dict, series_len: int) -> str:
    """``"last 60 s"`` for a series of ``series_len`` seconds."""
    return f"last {fmt_seconds(series_len)}" if series_len else "no history yet"


def render(data: dict, ctx: Context) -> str:
    page = Page(ctx)
    w, t, mem = data["workers"], data["tasks"], data["memory"]
    page.add(f"Frisky at {ctx.url} · up {fmt_seconds(data['wall_seconds'])} · "
             f"{fmt_count(t['total_submitted'])} tasks submitted, {fmt_count(t['done'])} done · "
             f"{fmt_count(data['spans_total'])} spans", "bold")
    page.add(f"workers    {fmt_count(w['total'])}: {fmt_count(w['busy'])} busy, {fmt_count(w['idle'])} idle, "
             f"{fmt_count(w['paused'])} paused")
    erred = f"erred {fmt_count(t['erred'])}"
    page.add(f"tasks      waiting {fmt_count(t['waiting'])} · queued {fmt_count(t['queued'])} · processing "
             f"{fmt_count(t['processing'])} · in memory {fmt_count(t['memory'])} · {erred} · released "
             f"{fmt_count(t['released'])}", "red" if t["erred"] else "")
    page.add(f"memory     used {fmt_bytes(mem['used'])} of {fmt_bytes(mem['limit'])} "
             f"({fmt_percent(mem['used'], mem['limit'])}) · peak {fmt_bytes(mem['peak'])} · managed "
             f"{fmt_bytes(mem['managed'])} · unmanaged {fmt_bytes(mem['unmanaged'])}")
    disk = data["disk"]
    page.add(f"spill      spilled {fmt_bytes(data['spilled_bytes'])} · unspilled {fmt_bytes(data['unspilled_bytes'])}"
             f" · on disk now {fmt_bytes(mem['spilled'])}")
    page.add(f"disk       read {fmt_bytes(disk['read_bytes'])} · written {fmt_bytes(disk['written_bytes'])}")
    net = data["network"]
    page.add(f"network    received {fmt_bytes(net['recv_bytes'])} · sent {fmt_bytes(net['sent_bytes'])} · "
             f"in transit now {fmt_bytes(mem['in_transit'])} · receive pool {fmt_bytes(mem['recv_pool'])}")

    comp = data["components"]
    series, totals = comp["series"], comp["totals"]
    skip = active_window([series.get(c) or [] for c in COMPONENTS])
    series = {c: (series.get(c) or [])[skip:] for c in COMPONENTS}
    length = max((len(series[c]) for c in COMPONENTS), default=0)
    grand = sum(float(totals.get(c) or 0) for c in COMPONENTS)
    page.heading(f"{'where time went':<{LABEL + SPARK}}  {'total':>8}  share")
    page.add(f"{'':<{LABEL}}seconds per second, {window(data, length)}", "dim")
    for c in COMPONENTS:
        total = float(totals.get(c) or 0)
        spark = sparkline(series.get(c) or [], SPARK)
        page.add(f"{c:<{LABEL}}{spark:<{SPARK}}  {fmt_seconds(total):>8}  {fmt_percent(total, grand):>5}")

    tops = data["top_spans"]
    if tops:
        name_w = min(28, max(len(str(s["name"])) for s in tops))
        spark_w = 100 - name_w - 2 - 8 - 2 - 8 - 2 - 9 - 2
        page.heading(f"{'costliest span types':<{name_w + 2 + spark_w}}  {'total':>8}  {'calls':>8}  {'bytes':>9}")
        for s in tops:
            name = str(s["name"])
            if len(name) > name_w:
                name = name[: name_w - 1] + "…"
            page.add(f"{name:<{name_w}}  {sparkline((s.get('series') or [])[skip:], spark_w):<{spark_w}}  "
                     f"{fmt_seconds(s['seconds']):>8}  {fmt_count(s['count']):>8}  {fmt_bytes(s['bytes']):>9}")

    outliers = data["outliers"]
    page.heading("workers unlike their peers" if outliers else "no worker is unlike its peers")
    for o in outliers:
        metric = str(o["metric"])
        note = f" — {o['note']}" if o.get("note") else ""
        page.add(f"  worker {o['worker']}: {metric} {metric_value(metric, o['value'])} "
                 f"(median {metric_value(metric, o['median'])}){note}", "yellow")
    _hints(page, data, length)
    return page.render(fallback=("prefixes", "progress and cost per kind of task"))


def _hints(page: Page, data: dict, length: int) -> None:
    t, w = data["tasks"], data["workers"]
    pending = t["waiting"] + t["queued"]
    if pending and (not t["processing"] or not w["total"]):
        page.hint("blocked", why=f"{plural(pending, 'task')} wait and none runs: why")
    if t["erred"]:
        page.hint("blocked", why=f"{plural(t['erred'], 'task')} erred: which, and what waits on them")
    if data["outliers"]:
        page.hint("stragglers", why="workers slower than their peers, and at what")
    if w["paused"]:
        page.hint("workers", why=f"{plural(w['paused'], 'worker')} paused over the memory limit")
    totals = data["components"]["totals"]
    grand = sum(float(v or 0) for v in totals.values())
    if grand and float(totals.get("network") or 0) > 0.3 * grand:
        page.hint("transfers", why="network takes a large share: the slowest transfers")
    if data["spilled_bytes"]:
        page.hint("workers", why="memory and spill per worker")
    if t["processing"] or pending:
        page.hint("prefixes", why="progress and cost per kind of task")
    tops = data["top_spans"]
    if tops:
        page.hint("spans", "--name", tops[0]["name"], why="the costliest span type, call by call")
    page.hint("timeline", "--view", "detailed", why="seconds per span type over time")
