"""``frisky observe prefixes``: progress, cost and errors per kind of task (key prefix)."""

from __future__ import annotations

from frisky.observe.page import Context, Page
from frisky.observe.text import bar, fmt_bytes, fmt_count, fmt_seconds, plural, table

STATES = ("waiting", "queued", "processing", "memory", "erred")


def total(p: dict) -> int:
    """Tasks of a prefix the client asked for: those still to run, those done, those erred."""
    return int(p["waiting"]) + int(p["queued"]) + int(p["processing"]) + int(p["done"]) + int(p["erred"])


def render(data: dict, ctx: Context) -> str:
    page = Page(ctx)
    prefixes = sorted(data["prefixes"], key=lambda p: -float(p["compute_seconds"]))
    done = sum(int(p["done"]) for p in prefixes)
    tasks = sum(total(p) for p in prefixes)
    compute = sum(float(p["compute_seconds"]) for p in prefixes)
    page.add(f"{plural(len(prefixes), 'prefix').replace('prefixs', 'prefixes')} (kinds of task) · {fmt_count(done)} of {fmt_count(tasks)} done · "
             f"{fmt_seconds(compute)} of compute", "bold")
    rows = []
    for p in prefixes:
        n = total(p)
        frac = int(p["done"]) / n if n else 1.0
        rows.append([p["prefix"], bar(frac, 10), f"{fmt_count(p['done'])}/{fmt_count(n)}",
                     *(fmt_count(p[s]) for s in STATES), fmt_seconds(p["compute_seconds"]), fmt_bytes(p["bytes"]),
                     fmt_count(p["errors"])])
    if rows:
        page.add("")
        page.extend(table(["prefix", "progress", "done", "wait", "queue", "run", "mem", "erred", "compute", "bytes",
                           "errors"], rows, right=range(2, 11), flex=0))
    else:
        page.add("no tasks yet")
    _hints(page, prefixes)
    return page.render()


def _hints(page: Page, prefixes: list[dict]) -> None:
    erred = [p for p in prefixes if int(p["erred"])]
    if erred:
        page.hint("blocked", why=f"{erred[0]['prefix']} has erred tasks: what waits on them")
    if any(int(p["waiting"]) + int(p["queued"]) for p in prefixes) and not any(int(p["processing"]) for p in prefixes):
        page.hint("blocked", why="tasks wait and none runs")
    if prefixes:
        top = prefixes[0]["prefix"]
        page.hint("timeline", "--view", "detailed", "--prefix", top, why=f"where {top}'s time goes, over time")
    page.hint("stragglers", why="is one worker slower than the rest?")
