"""Placement: which ready task goes to which worker, and the ``Compute`` instructions.

Data locality first (a task waits in the queue of the worker holding its largest input),
then least load; each worker's queue is sized by per-function duration estimates.
"""

from __future__ import annotations

import heapq
from typing import Any

from frisky import config
from frisky.scheduler.instructions import Compute
from frisky.scheduler.ready import ReadyQueues
from frisky.scheduler.task_states import QUEUED
from frisky.scheduler.tasks import TaskTable
from frisky.scheduler.transitions import Transitions
from frisky.scheduler.workers import WorkerInfo, Workers, allowed


class Placement:
    def __init__(self, tasks: TaskTable, workers: Workers, queues: ReadyQueues, transitions: Transitions) -> None:
        self.tasks = tasks
        self.workers = workers
        self.queues = queues
        self.transitions = transitions
        self.target = config.get("target_queue_seconds")
        self.unknown = config.get("unknown_task_duration")
        self.min_per_thread = config.get("min_tasks_per_thread")
        self.max_per_thread = config.get("max_tasks_per_thread")
        self.max_batch = config.get("max_batch")

    def _capacity(self, wi: WorkerInfo) -> tuple[int, float]:
        """(tasks that may still be sent, seconds of work that may still be queued)."""
        n = wi.nthreads
        return n * self.max_per_thread - len(wi.processing), n * self.target - wi.load

    def _take(self, wi: WorkerInfo, limit: int, out: list[int], shared: bool) -> int:
        """Move up to ``limit`` ready tasks to ``wi`` within its capacity, from its own
        queue, then (``shared``) the urgent, priority and common ones; returns how many."""
        t = self.tasks
        tstate, tfid, trestrict = t.tstate, t.tfid, t.trestrict
        queues = self.queues
        dur = t.duration
        unknown = self.unknown
        nthreads = wi.nthreads
        min_tasks = nthreads * self.min_per_thread
        room_n, room_s = self._capacity(wi)
        n_proc = len(wi.processing)
        took: list[int] = []
        ests: list[float] = []
        stale = 0
        sources = (wi.ready, queues.urgent, None, queues.common) if shared else (wi.ready,)
        for src in sources:
            while len(took) < limit and room_n > 0 and (room_s > 0 or n_proc < min_tasks):
                if src is None:
                    if not queues.prio:
                        break
                    tid = heapq.heappop(queues.prio)[2]
                else:
                    if not src:
                        break
                    tid = src.popleft()
                if tstate[tid] != QUEUED:
                    stale += 1
                    continue
                r = trestrict[tid]
                if r is not None and not allowed(wi, r):  # the old entry of a reused row
                    stale += 1
                    continue
                est = dur.get(tfid[tid])
                if est is None:
                    est = unknown
                    if room_s <= 0 and n_proc >= nthreads:
                        # never seen finishing: one per thread until it has, so a long task
                        # keeps no queue behind it (and a cancel finds the rest here)
                        if src is None:
                            heapq.heappush(queues.prio, (-t.tprio[tid], 0, tid))
                        else:
                            src.appendleft(tid)
                        break
                took.append(tid)
                ests.append(est)
                room_s -= est
                room_n -= 1
                n_proc += 1
        if took and len(set(took)) < len(took):  # a task queued twice (it left and came back)
            seen: set = set()
            firsts = [i for i, x in enumerate(took) if not (x in seen or seen.add(x))]
            stale += len(took) - len(firsts)
            took = [took[i] for i in firsts]
            ests = [ests[i] for i in firsts]
        queues.stale -= stale
        if took:
            self.transitions.start(wi, took, ests)
            out.extend(took)
        return len(took)

    def dispatch(self) -> dict[int, list[int]]:
        """Hand ready tasks to workers with room: worker -> tids."""
        plan: dict[int, list[int]] = {}
        workers = self.workers.alive
        queues = self.queues
        if not workers:
            return plan
        local = [wi for wi in workers if wi.ready]
        if not (local or queues.common or queues.prio or queues.urgent):
            return plan
        # first, work that belongs to a particular worker
        for wi in local:
            self._take(wi, 1 << 62, plan.setdefault(wi.idx, []), False)
        # then share the common queues evenly among workers with room
        for _ in range(2):
            backlog = len(queues.common) + len(queues.prio) + len(queues.urgent)
            if not backlog:
                break
            free = [wi for wi in workers if self._has_room(wi)]
            if not free:
                break
            free.sort(key=lambda wi: wi.load)
            share = max(1, -(-backlog // len(free)))
            for wi in free:
                self._take(wi, share, plan.setdefault(wi.idx, []), True)
        # idle workers steal locality-bound work from saturated ones
        if local:
            for wi in workers:
                if len(wi.processing) < wi.nthreads:
                    self._steal(wi, workers, plan)
        return {w: tids for w, tids in plan.items() if tids}

    def _has_room(self, wi: WorkerInfo) -> bool:
        room_n, room_s = self._capacity(wi)
        return room_n > 0 and (room_s > 0 or len(wi.processing) < wi.nthreads * self.min_per_thread)

    def _steal(self, thief: WorkerInfo, workers: list[WorkerInfo], plan: dict) -> None:
        victim = max(workers, key=lambda v: len(v.ready))
        n = len(victim.ready)
        if victim is thief or n < 2 or n <= victim.unstealable or self._has_room(victim):
            return
        tstate, trestrict = self.tasks.tstate, self.tasks.trestrict
        kept = []
        stale = 0
        for _ in range(len(victim.ready) // 2):
            tid = victim.ready.pop()
            if tstate[tid] != QUEUED:
                stale += 1
                continue
            if trestrict[tid] is not None:
                kept.append(tid)
                continue
            thief.ready.appendleft(tid)
        self.queues.stale -= stale
        victim.ready.extend(reversed(kept))
        if len(kept) + stale == n // 2:  # nothing taken: skip this backlog until it grows
            victim.unstealable = len(victim.ready)
        else:
            thief.unstealable = 0
        self._take(thief, 1 << 62, plan.setdefault(thief.idx, []), False)

    def compute(self, w: int, tids: list[int]) -> Compute:
        """The instruction that sends ``tids`` to worker ``w``."""
        t = self.tasks
        tkey = t.tkey
        keys = list(map(tkey.__getitem__, tids))
        fn_of = list(map(t.tfid.__getitem__, tids))
        fids = list(dict.fromkeys(fn_of))
        if len(fids) == 1:
            fidx: Any = 0
        else:
            fid_index = {f: i for i, f in enumerate(fids)}
            fidx = [fid_index[f] for f in fn_of]
        fn_blobs = [t.functions[f][0] for f in fids]
        payloads = list(map(t.tpayload.__getitem__, tids))
        deps = None
        where: dict[str, list] = {}  # dep key -> [holder address, nbytes]
        inline: dict[str, bytes] = {}
        tdeps, twhere, tblob, trefs = t.tdeps, t.twhere, t.tblob, t.trefs
        local = trefs and self.workers[w].local  # same-host holders' references mean something here
        for n, tid in enumerate(tids):
            dt = tdeps[tid]
            if dt is None:
                continue
            if deps is None:
                deps = [None] * len(tids)
            dk = []
            for d in dt:
                k = tkey[d]
                dk.append(k)
                h = twhere[d]
                if h < 0:
                    inline[k] = tblob[d]
                elif h != w:
                    ref = trefs.get(d) if local else None
                    if ref is None:
                        where[k] = [self.workers[h].address, t.tnbytes[d]]
                    else:
                        where[k] = [self.workers[h].address, t.tnbytes[d], ref]
            deps[n] = dk
        return Compute(w, tids, keys, fidx, fids, deps, where, payloads, fn_blobs, inline)
