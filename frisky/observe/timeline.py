"""``frisky observe timeline`` (seconds per second per component or span type, as
sparklines) and ``frisky observe spans`` (recent spans of one name, with percentiles)."""

from __future__ import annotations

import time

from frisky.observe.page import Context, Page
from frisky.observe.text import (
    WIDTH,
    active_window,
    clip,
    fmt_count,
    fmt_load,
    fmt_seconds,
    sparkline,
    table,
)

ROWS = 16


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def render_timeline(data: dict, ctx: Context) -> str:
    page = Page(ctx)
    opts = ctx.options
    series = {str(k): [float(x) for x in v] for k, v in data["series"].items()}
    skip = active_window(series.values())
    series = {k: v[skip:] for k, v in series.items()}
    length = max((len(v) for v in series.values()), default=0)
    t0, step = float(data["t0"]), float(data["step"])
    t0 += skip * step
    scope = [f"{opts.get('view') or 'component'} timeline"]
    if opts.get("prefix"):
        scope.append(f"prefix {opts['prefix']}")
    if opts.get("worker"):
        scope.append(f"worker {opts['worker']}")
    span = f"{_clock(t0)}-{_clock(t0 + length * step)}, {fmt_seconds(length * step)}" if length else "no history yet"
    page.add(" · ".join(scope) + f" · {span}", "bold")
    ranked = sorted(series.items(), key=lambda kv: -sum(kv[1]))
    busy = [(k, v) for k, v in ranked if sum(v) > 0]
    label = min(28, max((len(k) for k, _ in busy), default=8))
    spark = WIDTH - label - 2 - 2 - 8 - 2 - 10
    page.add(f"{'':<{label}}  {'seconds per second (busy threads)':<{spark}}  {'total':>8}  {'peak':>10}", "dim")
    for name, values in busy[:ROWS]:
        page.add(f"{clip(name, label):<{label}}  {sparkline(values, spark):<{spark}}  "
                 f"{fmt_seconds(sum(values)):>8}  {fmt_load(max(values) / step):>10}")
    idle = [k for k, v in ranked if sum(v) <= 0]
    if len(busy) > ROWS:
        page.add(f"… {len(busy) - ROWS} more series (--json for all)", "dim")
    if idle:
        page.add(f"no time in: {', '.join(idle)}", "dim")
    if not busy:
        page.add("nothing recorded in this window")
    if busy:
        page.hint("spans", "--name", busy[0][0] if opts.get("view") == "detailed" else "worker.exec.call",
                  why="the costliest, call by call")
    if opts.get("view") != "detailed":
        page.hint("timeline", "--view", "detailed", why="the same window per span type")
    page.hint("stragglers", why="is one worker slower than the rest?")
    return page.render()


def render_spans(data: dict, ctx: Context) -> str:
    page = Page(ctx)
    spans, st = data["spans"], data["stats"]
    now = float(data["now"])
    name = ctx.options.get("name")
    what = f"spans named {name}" if name else "spans"
    page.add(f"{what}: {fmt_count(st['count'])} recorded · p50 {fmt_seconds(st['p50'])} · p90 "
             f"{fmt_seconds(st['p90'])} · p99 {fmt_seconds(st['p99'])} · max {fmt_seconds(st['max'])}", "bold")
    if spans:
        page.add(f"most recent {len(spans)}:")
        rows = [[s["name"], s["worker"], s["prefix"] or "-", f"{fmt_seconds(now - float(s['start']))} ago",
                 fmt_seconds(s["seconds"])] for s in spans]
        page.extend(table(["span", "worker", "prefix", "started", "took"], rows, right=(3, 4), flex=2))
        slow = max(spans, key=lambda s: float(s["seconds"]))
        if slow["worker"] != "scheduler" and not str(slow["worker"]).startswith("client"):
            page.hint("timeline", "--view", "detailed", "--worker", slow["worker"],
                      why=f"the slowest shown ran on worker {slow['worker']}")
    else:
        page.add("no spans recorded" + (" under this name (names: frisky observe timeline --view detailed)"
                                        if name else ""))
    page.hint("stragglers", why="workers slower than their peers per span type")
    page.hint("timeline", "--view", "detailed", why="every span type over time")
    return page.render()
