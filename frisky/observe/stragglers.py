"""``frisky observe stragglers``: workers ranked by the seconds they spent over the median
worker, per span type, with the span types where they deviate."""

from __future__ import annotations

from frisky.observe.page import Context, Page
from frisky.observe.text import clip, fmt_count, fmt_seconds

DEVIATIONS = 3
ROWS = 10


def render(data: dict, ctx: Context) -> str:
    page = Page(ctx)
    ranked = sorted(data["workers"], key=lambda w: -float(w["excess_seconds"]))
    slow = [w for w in ranked if float(w["excess_seconds"]) > 0]
    if not slow:
        page.add("No worker is slower than its peers." if ranked else "No span statistics yet (no work done?).",
                 "bold")
    else:
        page.add(f"{len(slow)} of {len(ranked)} workers spent time over the median worker, largest first", "bold")
        page.add(f"{'#':>2}  {'worker':<16}  {'excess':>9}  deviations (per call: worker vs median)", "dim")
    for i, w in enumerate(slow[:ROWS], 1):
        devs = w["deviations"][:DEVIATIONS]  # the API's order: most excess seconds first
        first = True
        for d in devs or [None]:
            lead = f"{i:>2}  {clip(w['worker'], 16):<16}  {'+' + fmt_seconds(w['excess_seconds']):>9}  " if first \
                else " " * 33
            first = False
            if d is None:
                page.add(lead.rstrip(), "yellow" if i == 1 else "")
                continue
            page.add(f"{lead}{d['span']} {float(d['ratio']):.1f}× ({fmt_seconds(d['worker_seconds_per_call'])} vs "
                     f"{fmt_seconds(d['median_seconds_per_call'])}, {fmt_count(d['calls'])} calls)",
                     "yellow" if i == 1 else "")
    if len(slow) > ROWS:
        page.add(f"… {len(slow) - ROWS} more (--json for all)", "dim")
    if slow:
        top = slow[0]
        page.hint("workers", why=f"is worker {top['worker']} paused, spilling or short of memory?")
        page.hint("timeline", "--view", "detailed", "--worker", top["worker"],
                  why=f"what worker {top['worker']} spent its time on")
        devs = top["deviations"]
        if devs:
            page.hint("spans", "--name", devs[0]["span"], why="those calls one by one, with their workers")
    return page.render(fallback=("overview", "nothing stands out here: the whole cluster"))
