"""``frisky observe clients``: what each client is doing: building or uploading a graph,
waiting on a gather, or idle."""

from __future__ import annotations

from frisky.observe.page import Context, Page
from frisky.observe.text import fmt_count, fmt_percent, fmt_seconds, plural, table


def _graph(c: dict) -> str:
    g = c.get("graph")
    if not g:
        return "-"
    return f"built {fmt_percent(g['built'], g['total'])} sent {fmt_percent(g['uploaded'], g['total'])}"


def _name(c: dict) -> str:
    return str(c["name"] or f"#{c['id']}")


def _connected(c: dict, now: float) -> str:
    value = c["connected"]
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt_seconds(now - float(value))


def render(data: dict, ctx: Context) -> str:
    page = Page(ctx)
    clients = data["clients"]
    now = float(data["now"])
    busy = [c for c in clients if c["activity"] != "idle"]
    page.add(f"{plural(len(clients), 'client')} · {len(busy)} active", "bold")
    rows = [[_name(c), _connected(c, now), c["activity"], fmt_seconds(c["for_seconds"]),
             f"{fmt_count(c['tasks_done'])}/{fmt_count(c['tasks_total'])}", _graph(c), fmt_count(c["waiting_on"])]
            for c in clients]
    if rows:
        page.add("")
        page.extend(table(["client", "connected", "activity", "for", "tasks done", "graph", "waiting on"], rows,
                          right=(1, 3, 4, 6), flex=0))
        details = [(_name(c), c["detail"]) for c in clients if c.get("detail")]
        if details:
            page.add("")
        for name, detail in details:
            page.add(f"  {name}: {detail}", "dim")
    else:
        page.add("no clients are connected")
    _hints(page, clients)
    return page.render()


def _hints(page: Page, clients: list[dict]) -> None:
    waiting = [c for c in clients if c["activity"] == "waiting"]
    if waiting:
        page.hint("blocked", why=f"{plural(len(waiting), 'client')} waiting on results: what holds them up")
    if any(c["activity"] in ("building", "uploading") for c in clients):
        page.hint("timeline", "--view", "detailed", why="client.graph.build and client.submit over time")
    page.hint("prefixes", why="progress per kind of task")
