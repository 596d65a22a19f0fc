"""WorkerEvents: workers joining and leaving, and what they report (finished, erred,
cancelled, missing). Only the worker a task was sent to may report on it: a report
from any other changes nothing (it is counted in ``counts["ignored_reports"]``).
"""

from __future__ import annotations

from frisky.scheduler.ready import ReadyQueues
from frisky.scheduler.task_states import QUEUED, WAITING
from frisky.scheduler.tasks import TaskTable
from frisky.scheduler.transitions import Transitions
from frisky.scheduler.workers import WorkerInfo, Workers, allowed


class WorkerEvents:
    def __init__(self, tasks: TaskTable, workers: Workers, queues: ReadyQueues, transitions: Transitions,
                 allowed_failures: int) -> None:
        self.tasks = tasks
        self.workers = workers
        self.queues = queues
        self.transitions = transitions
        self.allowed_failures = allowed_failures

    def _live(self, w: int) -> WorkerInfo | None:
        if 0 <= w < len(self.workers.all):
            wi = self.workers.all[w]
            if wi.alive:
                return wi
        return None

    def _valid(self, tids: list[int]) -> bool:
        return not tids or (min(tids) >= 0 and max(tids) < len(self.tasks.tkey))

    def _rerun(self, wi: WorkerInfo, tid: int) -> None:
        """Run ``tid`` again (its worker dropped it); a scattered value cannot be."""
        t = self.tasks
        if t.tfid[tid] is None:
            self.transitions.err(tid, ["lost", f"worker {wi.name} dropped scattered {t.tkey[tid]!r}"], "")
        else:
            self.transitions.requeue(tid)

    def add_worker(self, info: dict) -> int:
        """A worker joined; returns its index. Raises ``Refused`` if it claims the address
        or the name of a live worker."""
        self.workers.check(info)
        wi = self.workers.add(info)
        # restricted tasks waiting for this worker
        queues = self.queues
        if queues.unplaced:
            tstate, trestrict = self.tasks.tstate, self.tasks.trestrict
            keep = []
            stale = 0
            for tid in queues.unplaced:
                if tstate[tid] != QUEUED or trestrict[tid] is None:  # (an entry of a reused row)
                    stale += 1
                elif allowed(wi, trestrict[tid]):
                    wi.ready.append(tid)
                else:
                    keep.append(tid)
            queues.unplaced.clear()
            queues.unplaced.extend(keep)
            queues.stale -= stale
        return wi.idx

    def remove_worker(self, w: int) -> bool:
        """Worker ``w`` is gone: reschedule its tasks and recompute the data it held.
        Returns False if it was not a live worker."""
        wi = self._live(w)
        if wi is None:
            return False
        self.workers.remove(wi)
        t = self.tasks
        tr = self.transitions
        # tasks it was running: the first nthreads were executing, so they are suspects
        for n, tid in enumerate(list(wi.processing)):
            if t.tproc[tid] != wi.idx:  # moved on by an earlier one's failure
                continue
            if t.tpayload[tid] is None and t.tfid[tid] is None:  # scattered, never stored
                tr.err(tid, ["lost", f"worker {wi.name} died while storing {t.tkey[tid]!r}"], "")
                continue
            if n < wi.nthreads:
                t.tfailures[tid] += 1
                if t.tfailures[tid] >= self.allowed_failures:
                    msg = (f"task {t.tkey[tid]!r} was running on {t.tfailures[tid]} workers that "
                           f"died, the last being {wi.name} ({wi.address})")
                    tr.err(tid, ["killed", msg], "")
                    continue
            tr.requeue(tid)
        # tasks queued for it
        tstate = t.tstate
        queued = list(wi.ready)
        wi.ready.clear()
        stale = 0
        for tid in queued:
            if tstate[tid] == QUEUED:
                self.queues.push(tid)
            else:
                stale += 1
        self.queues.stale -= stale
        # data it held
        for tid in list(wi.held):
            tr.lose(tid)
        tr.worker_gone(wi)
        return True

    def heartbeat(self, w: int, metrics: dict) -> None:
        wi = self._live(w)
        if wi is not None:
            wi.metrics = metrics

    def finished(self, w: int, tids: list[int], nbytes: list[int], blobs: list, timings=None,
                 refs: dict | None = None) -> None:
        """Worker ``w`` computed ``tids``; ``blobs[i]`` is the inline result or None (held there);
        ``refs``: tid -> same-host reference of a held result (opaque, forwarded to readers)."""
        wi = self._live(w)
        if wi is None or not self._valid(tids):
            return
        if timings:
            dur = self.tasks.duration
            for fid, count, seconds in timings:
                if count <= 0:
                    continue
                mean = seconds / count
                old = dur.get(fid)
                dur[fid] = mean if old is None else 0.5 * (old + mean)
        self.transitions.finished(wi, tids, nbytes, blobs, refs if refs and wi.local else None)

    def erred(self, w: int, tids: list[int], exc_blobs: list, tracebacks: list[str]) -> None:
        """Tasks raised on worker ``w``: retry them, or mark them and their dependents erred."""
        wi = self._live(w)
        if wi is None or not self._valid(tids):
            return
        t = self.tasks
        tr = self.transitions
        for tid, blob, tb in zip(tids, exc_blobs, tracebacks):
            if not tr.answered(wi, tid):
                tr.outbox.release_blob(blob)
                continue
            if t.tretries[tid] > 0 and t.tfid[tid] is not None:
                t.tretries[tid] -= 1
                tr.outbox.release_blob(blob)
                tr.requeue(tid)
                continue
            tr.err(tid, blob, tb)

    def cancelled(self, w: int, tids: list[int]) -> None:
        """Worker ``w`` dropped these tasks before running them (as asked, or on its own)."""
        wi = self._live(w)
        if wi is None or not self._valid(tids):
            return
        tr = self.transitions
        for tid in tids:
            if tr.answered(wi, tid):
                self._rerun(wi, tid)

    def missing(self, w: int, tid: int, keys: list[str]) -> None:
        """Worker ``w`` could not fetch ``keys``, inputs of ``tid``: that data is lost."""
        wi = self._live(w)
        if wi is None or not self._valid([tid]):
            return
        tr = self.transitions
        if not tr.answered(wi, tid):
            return
        t = self.tasks
        deps = t.tdeps[tid]
        if not deps:  # no inputs to miss: run it again
            self._rerun(wi, tid)
            return
        tr.wait_again(tid, answered=True)
        for k in keys:
            d = t.key_tid.get(k)
            if d is not None and d in deps and t.twhere[d] >= 0:
                tr.lose(d)
        if t.tstate[tid] == WAITING and t.twaiting[tid] == 0:  # nothing was lost after all
            tr.make_ready(tid)
