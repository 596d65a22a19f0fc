"""Placement of ready tasks on workers, and the instructions :meth:`flush` returns.

A mixin of :class:`~frisky.scheduler.state.SchedulerState`: data locality first, then
least load, each worker's queue sized by per-function duration estimates.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from frisky.scheduler.task_states import (
    ERRED,
    MEMORY,
    PROCESSING,
    QUEUED,
)
from frisky.scheduler.worker_events import WorkerInfo, allowed


class Placement:
    """Which ready task goes to which worker, and the messages that say so."""

    def _capacity(self, wi: WorkerInfo) -> tuple[int, float]:
        """(tasks that may still be sent, seconds of work that may still be queued)."""
        n = wi.nthreads
        return n * self.max_per_thread - len(wi.processing), n * self.target - wi.load

    def _take(self, wi: WorkerInfo, limit: int, out: list[int]) -> int:
        """Move up to ``limit`` ready tasks to ``wi``, within its capacity; returns how many."""
        tstate = self.tstate
        dur = self.duration
        unknown = self.unknown
        tfid = self.tfid
        tproc = self.tproc
        tpending = self.tpending
        processing = wi.processing
        w = wi.idx
        nthreads = wi.nthreads
        min_tasks = nthreads * self.min_per_thread
        tracked = self.tracked
        trestrict = self.trestrict
        room_n, room_s = self._capacity(wi)
        taken = 0
        load = 0.0
        for src in (wi.ready, None, self.ready):
            while taken < limit and room_n > 0 and (room_s > 0 or len(processing) < min_tasks):
                if src is None:
                    if not self.ready_prio:
                        break
                    tid = heapq.heappop(self.ready_prio)[2]
                else:
                    if not src:
                        break
                    tid = src.popleft()
                if tstate[tid] != QUEUED:
                    continue
                r = trestrict[tid]
                if r is not None and not allowed(wi, r):
                    # belongs to a worker that has not joined yet
                    self._deferred.append(tid)
                    continue
                est = dur.get(tfid[tid])
                if est is None:
                    est = unknown
                    if room_s <= 0 and len(processing) >= nthreads:
                        # never seen finishing: one per thread until it has, so a long task
                        # keeps no queue behind it (and a cancel finds the rest here)
                        if src is None:
                            heapq.heappush(self.ready_prio, (-self.tprio[tid], 0, tid))
                        else:
                            src.appendleft(tid)
                        break
                tstate[tid] = PROCESSING
                tproc[tid] = w
                tpending[tid] += 1
                processing[tid] = est
                load += est
                room_s -= est
                room_n -= 1
                taken += 1
                out.append(tid)
                if tracked and tid in tracked:
                    tracked.discard(tid)
                    for c in self._wanters(tid):
                        self._running.setdefault(c, []).append(tid)
        wi.load += load
        self.n_processing += taken
        return taken

    def _dispatch(self) -> dict[int, list[int]]:
        plan: dict[int, list[int]] = {}
        workers = [w for w in self.workers if w is not None and w.alive]
        if not workers or not (self.ready or self.ready_prio or any(wi.ready for wi in workers)):
            return plan
        self._deferred = []
        # first, work that belongs to a particular worker
        for wi in workers:
            if wi.ready:
                out = plan.setdefault(wi.idx, [])
                self._take_local(wi, out)
        # then share the common queues evenly among workers with room
        for _ in range(2):
            backlog = len(self.ready) + len(self.ready_prio)
            if not backlog:
                break
            free = [wi for wi in workers if self._has_room(wi)]
            if not free:
                break
            free.sort(key=lambda wi: wi.load)
            share = max(1, -(-backlog // len(free)))
            for wi in free:
                self._take(wi, share, plan.setdefault(wi.idx, []))
        # idle workers steal locality-bound work from saturated ones
        for wi in workers:
            if len(wi.processing) < wi.nthreads:
                self._steal(wi, workers, plan)
        if self._deferred:
            self.ready.extend(self._deferred)
        return {w: tids for w, tids in plan.items() if tids}

    def _take_local(self, wi: WorkerInfo, out: list[int]) -> None:
        saved_ready, saved_prio = self.ready, self.ready_prio
        self.ready, self.ready_prio = deque(), []
        try:
            self._take(wi, 1 << 62, out)
        finally:
            self.ready, self.ready_prio = saved_ready, saved_prio

    def _has_room(self, wi: WorkerInfo) -> bool:
        room_n, room_s = self._capacity(wi)
        return room_n > 0 and (room_s > 0 or len(wi.processing) < wi.nthreads * self.min_per_thread)

    def _steal(self, thief: WorkerInfo, workers: list[WorkerInfo], plan: dict) -> None:
        victim = max(workers, key=lambda v: len(v.ready))
        if victim is thief or len(victim.ready) < 2 or self._has_room(victim):
            return
        moved = deque()
        for _ in range(len(victim.ready) // 2):
            tid = victim.ready.pop()
            if self.tstate[tid] != QUEUED:
                continue
            if self.trestrict[tid] is not None:
                moved.appendleft(tid)
                continue
            thief.ready.appendleft(tid)
        victim.ready.extend(moved)
        self._take_local(thief, plan.setdefault(thief.idx, []))

    # ------------------------------------------------------------------ output
    def flush(self) -> list[tuple]:
        """Decide what runs where, and return every instruction for the server to send."""
        out = self._out
        self._out = []
        for w, tids in self._dispatch().items():
            for i in range(0, len(tids), self.max_batch):
                out.append(self._compute_instruction(w, tids[i:i + self.max_batch]))
        tstate = self.tstate
        if self._running:
            for cid, tids in self._running.items():
                keys = [self.tkey[t] for t in tids if tstate[t] == PROCESSING]
                if keys:
                    out.append(("running", cid, keys))
            self._running = {}
        if self._results:
            for cid, tids in self._results.items():
                if cid not in self.clients:
                    continue
                tkey, twhere, tblob = self.tkey, self.twhere, self.tblob
                tids = [t for t in tids if tstate[t] == MEMORY]
                keys = list(map(tkey.__getitem__, tids))
                blobs = list(map(tblob.__getitem__, tids))
                for i, t in enumerate(tids):
                    if twhere[t] >= 0:  # held by a worker: the client fetches it there
                        blobs[i] = self.workers[twhere[t]].address
                if keys:
                    out.append(("results", cid, keys, blobs))
            self._results = {}
        if self._erred:
            for cid, tids in self._erred.items():
                if cid not in self.clients:
                    continue
                keys, excs, tbs = [], [], []
                for tid in tids:
                    if tstate[tid] != ERRED:
                        continue
                    keys.append(self.tkey[tid])
                    exc, tb = self.tblob[tid]
                    excs.append(exc)
                    tbs.append(tb)
                if keys:
                    out.append(("erred", cid, keys, excs, tbs))
            self._erred = {}
        if self._free:
            for w, keys in self._free.items():
                if self.workers[w].alive:
                    out.append(("free", w, keys))
            self._free = {}
        if self._cancel:
            for w, tids in self._cancel.items():
                if self.workers[w].alive:
                    out.append(("cancel", w, tids))
            self._cancel = {}
        if self._released_blobs:
            out.append(("release-blobs", self._released_blobs))
            self._released_blobs = []
        return out

    def _compute_instruction(self, w: int, tids: list[int]) -> tuple:
        tkey = self.tkey
        keys = list(map(tkey.__getitem__, tids))
        fn_of = list(map(self.tfid.__getitem__, tids))
        fids = list(dict.fromkeys(fn_of))
        if len(fids) == 1:
            fidx: Any = 0
        else:
            fid_index = {f: i for i, f in enumerate(fids)}
            fidx = [fid_index[f] for f in fn_of]
        fn_blobs = [self.functions[f][0] for f in fids]
        payloads = list(map(self.tpayload.__getitem__, tids))
        deps = None
        where: dict[str, list] = {}  # dep key -> [holder address, nbytes]
        inline: dict[str, bytes] = {}
        tdeps, twhere, tblob = self.tdeps, self.twhere, self.tblob
        for n, t in enumerate(tids):
            dt = tdeps[t]
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
                    where[k] = [self.workers[h].address, self.tnbytes[d]]
            deps[n] = dk
        return ("compute", w, tids, keys, fidx, fids, deps, where, payloads, fn_blobs, inline)

