"""Worker events of :class:`~frisky.scheduler.state.SchedulerState`: joins, deaths, reports.

A mixin over the state's task columns: no sockets, no clocks, no pickles, like the rest.
"""

from __future__ import annotations

from collections import deque

from frisky.scheduler.task_states import (
    FORGOTTEN,
    MEMORY,
    PROCESSING,
    QUEUED,
    RELEASED,
    WAITING,
)


class WorkerInfo:
    """What the scheduler knows of one worker."""

    __slots__ = (
        "idx", "name", "address", "nthreads", "memory_limit", "pid", "host", "info",
        "processing", "load", "ready", "nbytes", "alive", "metrics",
    )

    def __init__(self, idx: int, info: dict) -> None:
        self.idx = idx
        self.info = info
        self.name = str(info.get("name", idx))
        self.address = info["address"]
        self.nthreads = int(info.get("nthreads", 1))
        self.memory_limit = info.get("memory_limit")
        self.pid = info.get("pid")
        self.host = info.get("host")
        self.processing: dict[int, float] = {}  # tid -> estimated seconds, in dispatch order
        self.load = 0.0  # estimated seconds of queued work
        self.ready: deque[int] = deque()  # tasks that should run here (data or restriction)
        self.nbytes = 0  # bytes of results held
        self.alive = True
        self.metrics: dict = {}


def allowed(wi: WorkerInfo, restrict: tuple) -> bool:
    """Whether a task restricted to ``restrict`` (addresses or names) may run on ``wi``."""
    return wi.address in restrict or wi.name in restrict


class WorkerEvents:
    """Workers joining and leaving, and what they report: finished, erred, cancelled, missing."""

    def add_worker(self, info: dict) -> int:
        """A worker joined; returns its index."""
        w = len(self.workers)
        wi = WorkerInfo(w, info)
        self.workers.append(wi)
        old = self.worker_by_address.get(wi.address)
        if old is not None:
            self.remove_worker(old)
        self.worker_by_address[wi.address] = w
        self.worker_by_name[wi.name] = w
        # restricted tasks waiting for this worker
        if self.ready:
            keep = deque()
            for tid in self.ready:
                r = self.trestrict[tid]
                if r is not None and allowed(wi, r) and self.tstate[tid] == QUEUED:
                    wi.ready.append(tid)
                else:
                    keep.append(tid)
            self.ready = keep
        return w

    def worker_for(self, ref: str) -> int | None:
        """The live worker a restriction's entry means: an address, else a name."""
        w = self.worker_by_address.get(ref)
        return self.worker_by_name.get(ref) if w is None else w

    def alive_workers(self) -> list[WorkerInfo]:
        return [w for w in self.workers if w is not None and w.alive]

    def remove_worker(self, w: int) -> None:
        """Worker ``w`` is gone: reschedule its tasks and recompute the data it held."""
        wi = self.workers[w]
        if wi is None or not wi.alive:
            return
        wi.alive = False
        if self.worker_by_address.get(wi.address) == w:
            del self.worker_by_address[wi.address]
        if self.worker_by_name.get(wi.name) == w:
            del self.worker_by_name[wi.name]
        tstate = self.tstate
        # tasks it was running: the first nthreads were executing, so they are suspects
        for n, tid in enumerate(list(wi.processing)):
            self.tpending[tid] -= 1
            self.tproc[tid] = -1
            self.n_processing -= 1
            st = tstate[tid]
            if st == FORGOTTEN:
                if self.tpending[tid] == 0:
                    self.free_tids.append(tid)
                continue
            if st != PROCESSING:
                continue
            if self.tpayload[tid] is None and self.tfid[tid] is None:  # scattered, never stored
                self._set_erred(tid, ["lost", f"worker {wi.name} died while storing {self.tkey[tid]!r}"], "")
                continue
            if n < wi.nthreads:
                self.tfailures[tid] += 1
                if self.tfailures[tid] >= self.allowed_failures:
                    msg = (f"task {self.tkey[tid]!r} was running on {self.tfailures[tid]} workers that "
                           f"died, the last being {wi.name} ({wi.address})")
                    tstate[tid] = QUEUED  # so _set_erred sees an active task
                    self._set_erred(tid, ["killed", msg], "")
                    continue
            self._make_ready(tid)
        wi.processing.clear()
        wi.load = 0.0
        queued, wi.ready = wi.ready, deque()
        for tid in queued:
            if tstate[tid] == QUEUED:
                if self.trestrict[tid] is not None:
                    self.ready.append(tid)
                else:
                    self._make_ready(tid)
        # data it held
        for tid in [t for t, h in enumerate(self.twhere) if h == w]:
            self._lose_data(tid)

    def _lose_data(self, tid: int) -> None:
        tstate = self.tstate
        self.twhere[tid] = -1
        if tstate[tid] != MEMORY:
            return
        tstate[tid] = RELEASED
        dl = self.tdependents[tid]
        if dl:
            for d in dl:
                st = tstate[d]
                if st == PROCESSING:
                    self._unprocess(d, cancel=True)
                    tstate[d] = WAITING
                    self.twaiting[d] = 1
                elif st == QUEUED:
                    tstate[d] = WAITING  # stale queue entries are skipped at dispatch
                    self.twaiting[d] = 1
                elif st == WAITING:
                    self.twaiting[d] += 1
        if self.twanted[tid] is not None or self.twaiters[tid] > 0:
            self._recompute(tid)
        elif not dl:
            self._forget(tid)

    def heartbeat(self, w: int, metrics: dict) -> None:
        wi = self.workers[w]
        if wi is not None:
            wi.metrics = metrics

    def finished(self, w: int, tids: list[int], nbytes: list[int], blobs: list, timings=None) -> None:
        """Worker ``w`` computed ``tids``; ``blobs[i]`` is the inline result or None (held there)."""
        wi = self.workers[w]
        if wi is None or not wi.alive:
            return
        if timings:
            dur = self.duration
            for fid, count, seconds in timings:
                mean = seconds / count
                old = dur.get(fid)
                dur[fid] = mean if old is None else 0.5 * (old + mean)
        tstate = self.tstate
        tproc = self.tproc
        tpending = self.tpending
        processing = wi.processing
        results = self._results
        tdependents = self.tdependents
        twanted = self.twanted
        key = self.tkey
        tnbytes, twhere, tblob, tdeps, twaiting, twaiters = (
            self.tnbytes, self.twhere, self.tblob, self.tdeps, self.twaiting, self.twaiters)
        make_ready = self._make_ready
        n_done = 0
        load = 0.0
        for tid, nb, blob in zip(tids, nbytes, blobs):
            tpending[tid] -= 1
            if tstate[tid] != PROCESSING or tproc[tid] != w:
                # stale: cancelled, forgotten, or already done elsewhere
                if blob is None and not (tstate[tid] == MEMORY and self.twhere[tid] == w):
                    self._free.setdefault(w, []).append(key[tid])
                if tstate[tid] == FORGOTTEN and tpending[tid] == 0:
                    self.free_tids.append(tid)
                elif self.local and blob is not None:
                    self._released_blobs.append(blob)
                continue
            est = processing.pop(tid, None)
            if est is not None:
                load += est
            tproc[tid] = -1
            n_done += 1
            tstate[tid] = MEMORY
            tnbytes[tid] = nb
            if blob is None:
                twhere[tid] = w
                wi.nbytes += nb
            else:
                tblob[tid] = blob
            wanted = twanted[tid]
            if wanted is not None:
                if type(wanted) is int:
                    r = results.get(wanted)
                    if r is None:
                        results[wanted] = [tid]
                    else:
                        r.append(tid)
                else:
                    for cid in wanted:
                        results.setdefault(cid, []).append(tid)
            dl = tdependents[tid]
            if dl is not None:
                for d in dl:
                    if tstate[d] == WAITING:
                        twaiting[d] -= 1
                        if twaiting[d] == 0:
                            make_ready(d)
            if tdeps[tid] is not None:
                self._deactivate(tid)
            if wanted is None and twaiters[tid] == 0:
                self._release(tid)
        wi.load -= load
        self.n_processing -= n_done
        self.counts["finished"] += n_done

    def erred(self, w: int, tids: list[int], exc_blobs: list, tracebacks: list[str]) -> None:
        """Tasks raised on worker ``w``: retry them, or mark them and their dependents erred."""
        wi = self.workers[w]
        if wi is None or not wi.alive:
            return
        for tid, blob, tb in zip(tids, exc_blobs, tracebacks):
            self.tpending[tid] -= 1
            if self.tstate[tid] != PROCESSING or self.tproc[tid] != w:
                if self.tstate[tid] == FORGOTTEN and self.tpending[tid] == 0:
                    self.free_tids.append(tid)
                continue
            if self.tretries[tid] > 0:
                self.tretries[tid] -= 1
                self._unprocess(tid, cancel=False)
                if self.local:
                    self._released_blobs.append(blob)
                self._make_ready(tid)
                continue
            self._set_erred(tid, blob, tb)

    def cancelled(self, w: int, tids: list[int]) -> None:
        """Worker ``w`` dropped these tasks before running them, as asked."""
        wi = self.workers[w]
        if wi is None or not wi.alive:
            return
        for tid in tids:
            self.tpending[tid] -= 1
            if self.tstate[tid] == FORGOTTEN and self.tpending[tid] == 0:
                self.free_tids.append(tid)
            elif self.tstate[tid] == PROCESSING and self.tproc[tid] == w:
                self._unprocess(tid, cancel=False)
                self._make_ready(tid)

    def missing(self, w: int, tid: int, keys: list[str]) -> None:
        """Worker ``w`` could not fetch ``keys`` for ``tid``: that data is lost."""
        wi = self.workers[w]
        if wi is None or not wi.alive:
            return
        self.tpending[tid] -= 1
        if self.tstate[tid] != PROCESSING or self.tproc[tid] != w:
            if self.tstate[tid] == FORGOTTEN and self.tpending[tid] == 0:
                self.free_tids.append(tid)
            return
        self._unprocess(tid, cancel=False)
        self.tstate[tid] = WAITING
        self.twaiting[tid] = 0
        for k in keys:
            d = self.key_tid.get(k)
            if d is not None and self.tstate[d] == MEMORY and self.twhere[d] >= 0:
                self._lose_data(d)
        if self.tstate[tid] == WAITING:
            deps = self.tdeps[tid] or ()
            self.twaiting[tid] = sum(1 for d in deps if self.tstate[d] != MEMORY)
            if self.twaiting[tid] == 0:
                self._make_ready(tid)

