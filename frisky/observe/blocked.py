"""``frisky observe blocked``: why tasks wait, and what they wait on.

Each reason the API gives (missing or lost dependencies, paused workers, restrictions no
worker matches, long-running tasks, erred upstream tasks, no workers) with its count and
examples, most important first.
"""

from __future__ import annotations

from frisky.observe.page import Context, Page
from frisky.observe.text import clip, fmt_bytes, fmt_count, fmt_seconds, plural

TITLES = {  # kind -> (what is counted, what it means)
    "no-workers": ("task", "to run and no worker connected"),
    "no-matching-worker": ("task", "restricted to workers that do not exist"),
    "paused-worker": ("worker", "paused over its memory limit: starts no task"),
    "missing-dependency": ("task", "waiting on a dependency that is gone"),
    "lost-dependency": ("task", "waiting on a dependency lost with its worker"),
    "erred-upstream": ("task", "erred because a task they depend on erred"),
    "long-running": ("task", "running for a long time"),
}
ORDER = list(TITLES)
EXAMPLES = 5


def _names(value: object) -> str:
    if isinstance(value, (list, tuple)):
        shown = ", ".join(str(v) for v in value[:3])
        return shown + (f" +{len(value) - 3} more" if len(value) > 3 else "")
    return str(value)


def describe(example: dict) -> str:
    """One example task and its detail fields, in words."""
    parts = [str(example["key"])] if example.get("key") is not None else []
    if example.get("restriction") is not None:
        parts.append(f"needs worker {_names(example['restriction'])}")
    if example.get("waiting_on") is not None:
        w = example["waiting_on"]
        parts.append(f"waits on {fmt_count(w)} tasks" if isinstance(w, int) else f"waits on {_names(w)}")
    if example.get("upstream") is not None:
        parts.append(f"upstream {_names(example['upstream'])} erred")
    if example.get("worker") is not None:
        parts.append(f"{'on ' if parts else ''}worker {example['worker']}")
    if example.get("memory") is not None and example.get("limit"):
        parts.append(f"memory {fmt_bytes(example['memory'])} of {fmt_bytes(example['limit'])}")
    if example.get("processing") is not None:
        parts.append(f"{plural(example['processing'], 'task')} assigned")
    if example.get("age") is not None:
        parts.append(f"for {fmt_seconds(example['age'])}")
    return " · ".join(parts)


def render(data: dict, ctx: Context) -> str:
    page = Page(ctx)
    reasons = sorted(data["reasons"], key=lambda r: ORDER.index(r["kind"]) if r["kind"] in ORDER else len(ORDER))
    waiting = sum(int(r["count"]) for r in reasons if TITLES.get(r["kind"], ("task",))[0] == "task")
    if data["progressing"]:
        head = "Tasks are progressing." + (" Some are held back:" if reasons else " Nothing is blocked.")
        page.add(head, "bold")
    else:
        page.add("Nothing progresses." + (" Why:" if reasons else " No task is waiting either: the cluster is idle."),
                 "bold", "red" if reasons else "")
    for r in reasons:
        kind = str(r["kind"])
        unit, title = TITLES.get(kind, ("task", kind))
        page.heading(f"{kind}: {plural(r['count'], unit)} {title}")
        if r.get("note"):
            page.add(f"  {r['note']}", "dim")
        for ex in r["examples"][:EXAMPLES]:
            page.add("  " + clip(describe(ex), 96), "yellow" if kind in ("no-matching-worker", "no-workers") else "")
        more = int(r["count"]) - min(len(r["examples"]), EXAMPLES)
        if more > 0:
            page.add(f"  … and {fmt_count(more)} more", "dim")
    _hints(page, reasons, waiting)
    return page.render()


def _hints(page: Page, reasons: list[dict], waiting: int) -> None:
    kinds = {r["kind"]: r for r in reasons}
    if "no-matching-worker" in kinds or "no-workers" in kinds:
        page.hint("workers", why="the workers there are, by name")
    if "paused-worker" in kinds:
        page.hint("workers", why="which workers are paused, and their memory")
    if "long-running" in kinds:
        ex = kinds["long-running"]["examples"]
        worker = ex[0].get("worker") if ex else None
        if worker is not None:
            page.hint("timeline", "--worker", worker, why=f"what worker {worker} did lately")
        page.hint("stragglers", why="is one worker slower than the rest?")
    if "missing-dependency" in kinds or "lost-dependency" in kinds:
        page.hint("transfers", why="dependencies moving between workers now")
    if "erred-upstream" in kinds:
        page.hint("prefixes", why="which kinds of task erred")
    if waiting:
        page.hint("clients", why="who submitted the waiting work")
