"""ReadyQueues: where a queued task waits for a worker, and in what order.

Five places; placement takes from the first four in this order: the queue of the worker the task belongs
to (its largest input is there, or its restriction names that worker); ``urgent`` (tasks
recomputed because their data was lost: a chain must not wait behind the backlog); the
priority heap; the common FIFO. Entries are removed lazily: a task that leaves
``queued`` other than by being taken leaves its entry behind, counted in ``stale`` and
skipped when popped, so the entries always number ``queued tasks + stale``.
"""

from __future__ import annotations

import heapq
from collections import deque

from frisky.scheduler.tasks import TaskTable
from frisky.scheduler.workers import Workers


class ReadyQueues:
    def __init__(self, tasks: TaskTable, workers: Workers) -> None:
        self.tasks = tasks
        self.workers = workers
        self.common: deque[int] = deque()  # no preferred worker, no priority
        self.prio: list = []  # heap of (-priority, seq, tid)
        self.urgent: deque[int] = deque()  # recomputations
        self.unplaced: deque[int] = deque()  # restricted to workers that have not joined
        self.seq = 0
        self.stale = 0  # entries of tasks that left `queued` without being taken
        self.recomputing: set[int] = set()  # tids to put first when they next become ready

    def __len__(self) -> int:
        return len(self.common) + len(self.prio) + len(self.urgent) + len(self.unplaced)

    def push(self, tid: int) -> None:
        """Queue ``tid`` (just made queued) where it should wait."""
        t = self.tasks
        urgent = bool(self.recomputing) and tid in self.recomputing
        if urgent:
            self.recomputing.discard(tid)
        restrict = t.trestrict[tid]
        workers = self.workers
        if restrict is not None:
            best = None
            for ref in restrict:
                w = workers.worker_for(ref)
                if w is not None and (best is None or len(workers[w].processing) < len(workers[best].processing)):
                    best = w
            if best is None:
                self.unplaced.append(tid)  # no such worker yet: a join looks here
            elif urgent:
                workers[best].ready.appendleft(tid)
            else:
                workers[best].ready.append(tid)
            return
        deps = t.tdeps[tid]
        if deps is not None:
            best, best_bytes = -1, 0
            twhere, tnbytes = t.twhere, t.tnbytes
            for d in deps:
                w = twhere[d]
                if w >= 0 and tnbytes[d] > best_bytes and workers[w].alive:
                    best, best_bytes = w, tnbytes[d]
            if best >= 0:
                wb = workers[best]
                if urgent:
                    wb.ready.appendleft(tid)
                else:
                    wb.ready.append(tid)
                wb.unstealable = 0
                return
        if urgent:
            self.urgent.append(tid)
            return
        prio = t.tprio[tid]
        if prio:
            self.seq += 1
            heapq.heappush(self.prio, (-prio, self.seq, tid))
        else:
            self.common.append(tid)

    def entries(self) -> list[int]:
        """Every entry, stale ones included (for validation)."""
        out = list(self.common) + list(self.urgent) + list(self.unplaced) + [e[2] for e in self.prio]
        for wi in self.workers.all:
            out.extend(wi.ready)
        return out
