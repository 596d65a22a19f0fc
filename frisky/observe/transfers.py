"""``frisky observe transfers``: data moving between workers now, and the slowest recent moves."""

from __future__ import annotations

from frisky.observe.page import Context, Page
from frisky.observe.text import (
    clip_left,
    fmt_bytes,
    fmt_count,
    fmt_rate,
    fmt_seconds,
    plural,
    table,
)

ROWS = 15


def _route(t: dict) -> str:
    return f"{clip_left(t['from'], 18)} → {clip_left(t['to'], 18)}"


def render(data: dict, ctx: Context) -> str:
    page = Page(ctx)
    tot = data["totals"]
    secs = float(tot["seconds"])
    avg = f" · {fmt_rate(float(tot['bytes']) / secs)} on average" if secs > 0 else ""
    page.add(f"{fmt_count(tot['count'])} transfers · {fmt_bytes(tot['bytes'])} in {fmt_seconds(secs)} of "
             f"transfer time{avg}", "bold")
    flying = sorted(data["in_flight"], key=lambda t: -float(t["age"]))
    page.heading(f"in flight now: {len(flying)}, {fmt_bytes(sum(float(t['bytes']) for t in flying))}")
    if flying:
        page.extend(table(["key", "from → to", "bytes", "age"],
                          [[t["key"], _route(t), fmt_bytes(t["bytes"]), fmt_seconds(t["age"])] for t in flying[:ROWS]],
                          right=(2, 3), indent=2))
    slow = sorted(data["slowest"], key=lambda t: -float(t["seconds"]))
    page.heading(f"slowest recent: {len(slow)}")
    if slow:
        page.extend(table(["key", "from → to", "bytes", "took", "bandwidth"],
                          [[t["key"], _route(t), fmt_bytes(t["bytes"]), fmt_seconds(t["seconds"]),
                            fmt_rate(t["bandwidth"])] for t in slow[:ROWS]], right=(2, 3, 4), indent=2))
    _hints(page, flying, slow)
    return page.render()


def _hints(page: Page, flying: list[dict], slow: list[dict]) -> None:
    old = [t for t in flying if float(t["age"]) > 5]
    if old:
        page.hint("workers", why=f"{plural(len(old), 'transfer')} older than 5 s: is {old[0]['from']} busy or paused?")
    if slow:
        page.hint("spans", "--name", "worker.transfer.fetch", why="every recent fetch, with its worker")
    page.hint("timeline", "--view", "component", why="network time against compute time")
    page.hint("workers", why="network bytes in and out per worker")
