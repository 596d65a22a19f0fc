"""What the dashboard may know of the scheduler's state, copied on the scheduler's loop.

:func:`build` runs on the loop thread about once a second and returns plain data (dicts,
lists, numbers, str) that nothing mutates afterwards; the dashboard's HTTP thread reads
only that, and :class:`~frisky.telemetry.history.History`. The costly part — task states
per key prefix and the reasons tasks wait — comes from :class:`Scanner`, which reads at
most :data:`Scanner.ROWS` task rows per call and publishes a full pass once it has one
(every call for graphs up to that size), so a million-task graph adds a bounded slice of
work per second, not a full scan.
"""

from __future__ import annotations

import os
import time

from frisky.scheduler.task_states import (
    ERRED,
    FORGOTTEN,
    MEMORY,
    PROCESSING,
    QUEUED,
    RELEASED,
    STATE_NAMES,
    WAITING,
)
from frisky.telemetry.history import clean_prefix

MAX_PREFIXES = 2000  # distinct prefixes a scan counts (more are "other")
EXAMPLES = 5


def _fresh() -> dict:
    return {"prefixes": {}, "lost": [0, []], "missing": [0, []], "upstream": [0, []], "waiting": 0}


class Scanner:
    """Task states per prefix, and waiting tasks' reasons, over passes of bounded slices."""

    ROWS = 50_000

    def __init__(self) -> None:
        self.pos = 0
        self.acc = _fresh()
        self.result = _fresh()

    def step(self, state) -> dict:
        """Scan the next slice of rows; the last complete pass."""
        t = state.tasks
        tstate, tkey, tdeps = t.tstate, t.tkey, t.tdeps
        recomputing = state.queues.recomputing
        n = len(tkey)
        pos = min(self.pos, n)
        end = min(n, pos + self.ROWS)
        acc = self.acc
        prefixes = acc["prefixes"]
        lost, missing, upstream = acc["lost"], acc["missing"], acc["upstream"]
        waiting = 0
        for tid in range(pos, end):
            st = tstate[tid]
            if st == FORGOTTEN:
                continue
            key = tkey[tid]
            prefix = key.partition("-")[0] if type(key) is str else str(key)
            row = prefixes.get(prefix)
            if row is None:
                if len(prefixes) >= MAX_PREFIXES:
                    prefix = "other"
                    row = prefixes.get(prefix)
                if row is None:
                    row = prefixes[prefix] = [0] * len(STATE_NAMES)
            row[st] += 1
            if st == WAITING:
                waiting += 1
                deps = tdeps[tid]
                if deps:
                    for d in deps:
                        ds = tstate[d]
                        if d in recomputing or ds == RELEASED:
                            lost[0] += 1
                            if len(lost[1]) < EXAMPLES:
                                lost[1].append({"key": key, "waiting_on": tkey[d]})
                            break
                        if ds == FORGOTTEN or ds == ERRED:
                            missing[0] += 1
                            if len(missing[1]) < EXAMPLES:
                                missing[1].append({"key": key, "waiting_on": tkey[d]})
                            break
            elif st == ERRED and tdeps[tid]:
                for d in tdeps[tid]:
                    if tstate[d] == ERRED:
                        upstream[0] += 1
                        if len(upstream[1]) < EXAMPLES:
                            upstream[1].append({"key": key, "upstream": tkey[d]})
                        break
        acc["waiting"] += waiting
        if end >= n:
            self.result, self.acc, self.pos = acc, _fresh(), 0
        else:
            self.pos = end
        return self.result


def _unplaced(state) -> tuple[int, list]:
    """Queued tasks restricted to workers that are not there (bounded count and examples)."""
    t = state.tasks
    count, examples = 0, []
    for i, tid in enumerate(state.queues.unplaced):
        if i >= 100_000:
            break
        if t.tstate[tid] != QUEUED or t.trestrict[tid] is None:
            continue
        count += 1
        if len(examples) < EXAMPLES:
            examples.append({"key": t.tkey[tid], "restriction": list(t.trestrict[tid])})
    return count, examples


def build(server, scanner: Scanner, now: float | None = None) -> dict:
    """Copy what the API serves from the scheduler's live state (loop thread only)."""
    state = server.state
    now = time.time() if now is None else now
    counts = state.state_counts()
    scan = scanner.step(state)
    unplaced = _unplaced(state)
    workers = []
    for wi in state.workers.alive:
        workers.append({
            "name": wi.name, "address": wi.address, "host": wi.host, "pid": wi.pid, "nthreads": wi.nthreads,
            "memory_limit": wi.memory_limit, "processing": len(wi.processing), "in_memory": len(wi.held),
            "nbytes": wi.nbytes, "ready": len(wi.ready),
        })
    prefixes = {}
    for prefix, row in scan["prefixes"].items():
        p = clean_prefix(prefix)
        cur = prefixes.get(p)
        if cur is None:
            prefixes[p] = {STATE_NAMES[s]: row[s] for s in (WAITING, QUEUED, PROCESSING, MEMORY, ERRED, RELEASED)}
        else:
            for s in (WAITING, QUEUED, PROCESSING, MEMORY, ERRED, RELEASED):
                cur[STATE_NAMES[s]] += row[s]
    return {
        "now": now,
        "pid": os.getpid(),
        "address": server.address,
        "workers": workers,
        "tasks": {name: counts.get(name, 0) for name in ("waiting", "queued", "processing", "memory", "erred",
                                                         "released")},
        "counts": dict(state.counts),
        "prefixes": prefixes,
        "clients": server.client_activity(now),
        "facts": {
            "lost": {"count": scan["lost"][0], "examples": scan["lost"][1]},
            "missing": {"count": scan["missing"][0], "examples": scan["missing"][1]},
            "upstream": {"count": scan["upstream"][0], "examples": scan["upstream"][1]},
            "unplaced": {"count": unplaced[0], "examples": unplaced[1]},
        },
        "dropped_messages": server.dropped.count,
        "dropped_telemetry": server.bad_telemetry.count,
    }
