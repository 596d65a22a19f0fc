"""Transitions: every change of a task's state, one method per (from, to), with its bookkeeping.

Nothing else writes ``tstate``, the per-state counts, ``twaiting``, ``twaiters``,
``tpending`` or a worker's ``processing``/``load``/``held``/``nbytes``. The invariants
these keep are checked by ``validate.py``:

- ``twaiting[t]``: for a waiting task, its dependencies (with repeats) not in memory; else 0.
- ``twaiters[t]``: dependents (with repeats) that are waiting, queued or processing.
- ``tproc[t] >= 0`` exactly when processing, and ``t`` is then in that worker's ``processing``.
- ``tpending[t]``: 1 if processing, plus each worker told to cancel it that has not answered.
- ``twhere[t] >= 0`` only in memory, and ``t`` is then in that worker's ``held``.
- ``trefs[t]`` only while ``twhere[t] >= 0``.

Transitions (``*`` = any live state):

===========================  ===============================================
forgotten -> waiting         :meth:`born` (a fresh row)
waiting -> queued            :meth:`make_ready`, :meth:`make_ready_many`
queued -> processing         :meth:`start`
processing -> memory         :meth:`finished`
processing -> queued         :meth:`requeue` (retry, cancel acknowledged, worker died)
processing|queued -> waiting :meth:`wait_again` (an input was lost)
waiting -> memory|processing :meth:`stored_inline`, :meth:`storing` (scatter)
\\* -> erred                  :meth:`err` (with every active dependent)
memory|active -> released    :meth:`release`, :meth:`drop_inline`, :meth:`lose`
released -> waiting          :meth:`recompute`
\\* -> forgotten              :meth:`forget`, :meth:`forget_independent`
===========================  ===============================================
"""

from __future__ import annotations

from frisky.scheduler.outbox import Outbox
from frisky.scheduler.ready import ReadyQueues
from frisky.scheduler.task_states import (
    ERRED,
    FORGOTTEN,
    MEMORY,
    PROCESSING,
    QUEUED,
    RELEASED,
    WAITING,
)
from frisky.scheduler.tasks import TaskTable
from frisky.scheduler.workers import WorkerInfo, Workers


class Transitions:
    def __init__(self, tasks: TaskTable, workers: Workers, queues: ReadyQueues, outbox: Outbox,
                 counts: dict) -> None:
        self.tasks = tasks
        self.workers = workers
        self.queues = queues
        self.outbox = outbox
        self.counts = counts
        self.tracked: set[int] = set()  # tids whose client is told when they start (executor submit)

    # ------------------------------------------------------------ birth
    def born(self, tids: list[int]) -> None:
        """forgotten -> waiting: fresh rows become tasks."""
        tstate = self.tasks.tstate
        n = len(tids)
        start = len(tstate) - n
        if n and tids[0] == start and tids == list(range(start, start + n)):  # all new rows, at the end
            tstate[tids[0]:] = [WAITING] * n
        else:
            for t in tids:
                tstate[t] = WAITING
        ns = self.tasks.nstate
        ns[FORGOTTEN] -= n
        ns[WAITING] += n

    def link(self, tids: list[int], dtids_per_task: list) -> None:
        """Waiting tasks ``tids`` need ``dtids_per_task[i]`` (tuples of tids, or None):
        record the edges, then each is ready, still waiting, or erred."""
        t = self.tasks
        tstate, tdeps, tdependents, twaiting, twaiters = t.tstate, t.tdeps, t.tdependents, t.twaiting, t.twaiters
        make_ready = self.make_ready
        for tid, dtids in zip(tids, dtids_per_task):
            if not dtids:
                make_ready(tid)
                continue
            tdeps[tid] = dtids
            waiting = 0
            general = False
            for d in dtids:
                dl = tdependents[d]
                if dl is None:
                    tdependents[d] = [tid]
                else:
                    dl.append(tid)
                twaiters[d] += 1
                st = tstate[d]
                if st != MEMORY:
                    waiting += 1
                    if st > MEMORY:  # erred or released
                        general = True
            twaiting[tid] = waiting
            if not general:
                if waiting == 0:
                    make_ready(tid)
                continue
            for d in dtids:
                if tstate[d] == RELEASED:
                    self.recompute(d)
            if tstate[tid] != WAITING:  # erred with an input that could not be recomputed
                continue
            err = next((d for d in dtids if tstate[d] == ERRED), None)
            if err is not None:
                self.err(tid, *t.tblob[err])
                continue
            twaiting[tid] = sum(1 for d in dtids if tstate[d] != MEMORY)
            if twaiting[tid] == 0:
                make_ready(tid)

    # ------------------------------------------------------------ waiting -> queued
    def make_ready(self, tid: int) -> None:
        """waiting -> queued."""
        t = self.tasks
        t.tstate[tid] = QUEUED
        t.twaiting[tid] = 0
        ns = t.nstate
        ns[WAITING] -= 1
        ns[QUEUED] += 1
        self.queues.push(tid)

    def make_ready_many(self, tids: list[int]) -> None:
        """waiting -> queued for fresh independent tasks without restrictions or priorities."""
        tstate = self.tasks.tstate
        for t in tids:
            tstate[t] = QUEUED
        ns = self.tasks.nstate
        ns[WAITING] -= len(tids)
        ns[QUEUED] += len(tids)
        self.queues.common.extend(tids)

    # ------------------------------------------------------------ queued -> processing
    def start(self, wi: WorkerInfo, tids: list[int], ests: list[float]) -> None:
        """queued -> processing: ``tids`` (just taken from the ready queues) go to ``wi``."""
        t = self.tasks
        tstate, tproc, tpending = t.tstate, t.tproc, t.tpending
        w = wi.idx
        processing = wi.processing
        for tid, est in zip(tids, ests):
            tstate[tid] = PROCESSING
            tproc[tid] = w
            tpending[tid] += 1
            processing[tid] = est
        wi.load += sum(ests)
        ns = t.nstate
        ns[QUEUED] -= len(tids)
        ns[PROCESSING] += len(tids)
        tracked = self.tracked
        if tracked:
            running = self.outbox.running
            for tid in tids:
                if tid in tracked:
                    tracked.discard(tid)
                    for c in t.wanters(tid):
                        running.setdefault(c, []).append(tid)

    def _unprocess(self, tid: int, answered: bool) -> None:
        """Take ``tid`` off its worker (the caller sets the new state). ``answered``: the
        worker reported on it, or died; else it is told to cancel it."""
        t = self.tasks
        w = t.tproc[tid]
        t.tproc[tid] = -1
        wi = self.workers[w]
        est = wi.processing.pop(tid)
        # reset when idle: sums of float estimates drift (a residue like 5e-15 would skew placement)
        wi.load = wi.load - est if wi.processing else 0.0
        t.nstate[PROCESSING] -= 1
        if answered:
            t.tpending[tid] -= 1
        else:
            # a count, not a set: the same task may be sent to, and cancelled on, one
            # worker twice before it answers the first; each send gets one answer
            wi.cancelling[tid] = wi.cancelling.get(tid, 0) + 1
            self.outbox.cancel.setdefault(w, []).append(tid)

    # ------------------------------------------------------------ processing -> memory
    def finished(self, wi: WorkerInfo, tids: list[int], nbytes: list[int], blobs: list,
                 refs: dict | None = None) -> None:
        """processing -> memory for the tasks ``wi`` reports done (``blobs[i]``: the inline
        result, or None: held by ``wi``, with ``refs[tid]`` its same-host reference if any).
        Reports on tasks not processing there are answers to a cancel, or else ignored."""
        t = self.tasks
        w = wi.idx
        tstate, tproc, tpending, tdependents, twanted = t.tstate, t.tproc, t.tpending, t.tdependents, t.twanted
        tnbytes, twhere, tblob, tdeps, twaiting, twaiters = t.tnbytes, t.twhere, t.tblob, t.tdeps, t.twaiting, t.twaiters
        processing = wi.processing
        results = self.outbox.results
        make_ready = self.make_ready
        n_done = 0
        load = 0.0
        ns = t.nstate
        for tid, nb, blob in zip(tids, nbytes, blobs):
            if tproc[tid] != w:
                self._late_answer(wi, tid, blob, blob is None)
                continue
            load += processing.pop(tid)
            tproc[tid] = -1
            tpending[tid] -= 1
            n_done += 1
            tstate[tid] = MEMORY
            ns[PROCESSING] -= 1
            ns[MEMORY] += 1
            tnbytes[tid] = nb
            if blob is None:
                twhere[tid] = w
                wi.nbytes += nb
                wi.held.add(tid)
                if refs:
                    ref = refs.get(tid)
                    if ref is not None:
                        t.trefs[tid] = ref
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
                self.release(tid)
        wi.load = wi.load - load if wi.processing else 0.0
        self.counts["finished"] += n_done

    def _late_answer(self, wi: WorkerInfo, tid: int, blob, stored: bool) -> bool:
        """``wi`` reported on ``tid``, which is not processing there: the answer to a
        cancel (True), or a report from a worker that was never sent it (ignored, False).
        ``stored``: ``wi`` says it holds a result for it."""
        if tid not in wi.cancelling:
            self.counts["ignored_reports"] += 1
            self.outbox.release_blob(blob)
            return False
        t = self.tasks
        left = wi.cancelling[tid] - 1
        if left:
            wi.cancelling[tid] = left
        else:
            del wi.cancelling[tid]
        t.tpending[tid] -= 1
        st = t.tstate[tid]
        if stored and not (st == MEMORY and t.twhere[tid] == wi.idx):  # a result nobody wants
            self.outbox.free.setdefault(wi.idx, []).append(t.tkey[tid])
        self.outbox.release_blob(blob)
        if st == FORGOTTEN and t.tpending[tid] == 0:
            t.free.append(tid)
        return True

    def answered(self, wi: WorkerInfo, tid: int) -> bool:
        """``wi`` answered for ``tid`` without a result (erred, cancelled, missing): True if
        it was processing there (the caller then moves it on), else see :meth:`_late_answer`."""
        if self.tasks.tproc[tid] == wi.idx:
            return True
        self._late_answer(wi, tid, None, False)
        return False

    # ------------------------------------------------------------ back to the queues
    def requeue(self, tid: int, answered: bool = True) -> None:
        """processing -> queued: a retry, an acknowledged cancel, or its worker died."""
        self._unprocess(tid, answered)
        t = self.tasks
        t.tstate[tid] = QUEUED
        t.nstate[QUEUED] += 1
        self.queues.push(tid)

    def wait_again(self, tid: int, answered: bool = False) -> None:
        """processing|queued -> waiting: an input is no longer in memory. The task is then
        recomputed ahead of the backlog, as the input is."""
        t = self.tasks
        st = t.tstate[tid]
        if st == PROCESSING:
            self._unprocess(tid, answered)
        elif st == QUEUED:
            t.nstate[QUEUED] -= 1
            self.queues.stale += 1
        else:
            raise AssertionError(f"wait_again from {st}")
        t.tstate[tid] = WAITING
        t.nstate[WAITING] += 1
        tstate = t.tstate
        t.twaiting[tid] = sum(1 for d in t.tdeps[tid] if tstate[d] != MEMORY)
        self.queues.recomputing.add(tid)

    # ------------------------------------------------------------ scatter
    def stored_inline(self, tid: int, blob: bytes) -> None:
        """waiting -> memory: a scattered value the scheduler keeps."""
        t = self.tasks
        t.tstate[tid] = MEMORY
        t.nstate[WAITING] -= 1
        t.nstate[MEMORY] += 1
        t.tblob[tid] = blob
        t.tnbytes[tid] = len(blob)

    def storing(self, tid: int, wi: WorkerInfo) -> None:
        """waiting -> processing: a scattered value sent to ``wi`` to store."""
        t = self.tasks
        t.tstate[tid] = PROCESSING
        t.nstate[WAITING] -= 1
        t.nstate[PROCESSING] += 1
        t.tproc[tid] = wi.idx
        t.tpending[tid] += 1
        wi.processing[tid] = 0.0

    # ------------------------------------------------------------ erred
    def err(self, tid: int, exc, tb: str, answered: bool = True) -> None:
        """* -> erred for ``tid`` and every active dependent, with ``exc`` (a blob or
        [kind, text]). ``answered``: if ``tid`` is processing, its worker reported it."""
        t = self.tasks
        tstate, ns = t.tstate, t.nstate
        erred = self.outbox.erred
        stack = [tid]
        while stack:
            x = stack.pop()
            st = tstate[x]
            if st == ERRED or st == FORGOTTEN or st == MEMORY:
                continue
            if st == PROCESSING:
                self._unprocess(x, answered and x == tid)
                ns[PROCESSING] += 1  # counted down below
            elif st == QUEUED:
                self.queues.stale += 1
            if st <= PROCESSING:  # active
                self._deactivate(x)
            tstate[x] = ERRED
            ns[st] -= 1
            ns[ERRED] += 1
            t.twaiting[x] = 0
            self.counts["erred"] += 1
            t.tblob[x] = (exc, tb)
            self.tracked.discard(x)
            self.queues.recomputing.discard(x)
            for cid in t.wanters(x):
                erred.setdefault(cid, []).append(x)
            dl = t.tdependents[x]
            if dl:
                stack.extend(dl)

    # ------------------------------------------------------------ released
    def _deactivate(self, tid: int) -> None:
        """``tid`` left the active states: its inputs have one waiter less each, and those
        nobody needs any more are released."""
        t = self.tasks
        deps = t.tdeps[tid]
        if deps is None:
            return
        twaiters, twanted = t.twaiters, t.twanted
        for d in deps:
            twaiters[d] -= 1
            if twaiters[d] == 0 and twanted[d] is None:
                self.release(d)

    def release(self, tid: int) -> None:
        """memory|active -> released: nobody needs ``tid``'s result; then forgotten if no
        dependent keeps its recipe."""
        t = self.tasks
        st = t.tstate[tid]
        if st == MEMORY:
            self._free_data(tid)
            t.tstate[tid] = RELEASED
            t.nstate[MEMORY] -= 1
            t.nstate[RELEASED] += 1
        elif st <= PROCESSING:
            if st == PROCESSING:
                self._unprocess(tid, answered=False)
            else:
                t.nstate[st] -= 1
                if st == QUEUED:
                    self.queues.stale += 1
            t.tstate[tid] = RELEASED
            t.nstate[RELEASED] += 1
            t.twaiting[tid] = 0
            self.queues.recomputing.discard(tid)
            self._deactivate(tid)
        if not t.tdependents[tid]:
            self.forget(tid)

    def drop_inline(self, tid: int) -> None:
        """memory -> released for an inline result kept only as its dependents' recipe."""
        t = self.tasks
        self.outbox.release_blob(t.tblob[tid])
        t.tblob[tid] = None
        t.tstate[tid] = RELEASED
        t.nstate[MEMORY] -= 1
        t.nstate[RELEASED] += 1

    def _free_data(self, tid: int) -> None:
        t = self.tasks
        w = t.twhere[tid]
        if w >= 0:
            t.twhere[tid] = -1
            if t.trefs:
                t.trefs.pop(tid, None)
            wi = self.workers[w]
            wi.nbytes -= t.tnbytes[tid]
            wi.held.discard(tid)
            if wi.alive:
                self.outbox.free.setdefault(w, []).append(t.tkey[tid])
        blob = t.tblob[tid]
        if blob is not None:
            if type(blob) is bytes:
                self.outbox.release_blob(blob)
            t.tblob[tid] = None

    def lose(self, tid: int) -> None:
        """memory -> released: the worker holding ``tid``'s data died or lost it. Its
        active dependents wait again; it is recomputed if still needed."""
        t = self.tasks
        tstate = t.tstate
        w = t.twhere[tid]
        if w < 0:  # freed meanwhile (forgotten with a dependent lost just before)
            return
        t.twhere[tid] = -1
        if t.trefs:
            t.trefs.pop(tid, None)
        wi = self.workers[w]
        wi.nbytes -= t.tnbytes[tid]
        wi.held.discard(tid)
        tstate[tid] = RELEASED
        t.nstate[MEMORY] -= 1
        t.nstate[RELEASED] += 1
        dl = t.tdependents[tid]
        if dl:
            for d in dict.fromkeys(dl):  # once each, though it may need this input twice
                st = tstate[d]
                if st == PROCESSING or st == QUEUED:
                    self.wait_again(d)
                elif st == WAITING:
                    t.twaiting[d] = sum(1 for x in t.tdeps[d] if tstate[x] != MEMORY)
        if t.twanted[tid] is not None or t.twaiters[tid] > 0:
            self.recompute(tid)
        elif not dl:
            self.forget(tid)

    def recompute(self, tid: int) -> None:
        """released -> waiting for ``tid`` and, first, each released input it needs."""
        tstate, tdeps = self.tasks.tstate, self.tasks.tdeps
        stack = [(tid, False)]
        seen = set()
        while stack:  # depth-first, inputs before the tasks that need them (chains may be long)
            x, expanded = stack.pop()
            if expanded:
                if tstate[x] == RELEASED:
                    self._recompute_one(x)
                continue
            if x in seen:
                continue
            seen.add(x)
            stack.append((x, True))
            for d in tdeps[x] or ():
                if tstate[d] == RELEASED and d not in seen:
                    stack.append((d, False))

    def _recompute_one(self, tid: int) -> None:
        t = self.tasks
        if t.tpayload[tid] is None:
            self.err(tid, ["lost", f"data of {t.tkey[tid]!r} was lost and cannot be recomputed"], "")
            return
        self.counts["recomputed"] += 1
        tstate = t.tstate
        tstate[tid] = WAITING
        t.nstate[RELEASED] -= 1
        t.nstate[WAITING] += 1
        self.queues.recomputing.add(tid)
        deps = t.tdeps[tid]
        if deps is not None:
            twaiters = t.twaiters
            for d in deps:  # first, so that nothing it needs is released meanwhile
                twaiters[d] += 1
            for d in deps:  # released since the walk began (an error elsewhere let it go)
                if tstate[d] == RELEASED:
                    self.recompute(d)
            if tstate[tid] != WAITING:  # erred with an input that could not be recomputed
                return
            err = next((d for d in deps if tstate[d] == ERRED), None)
            if err is not None:
                self.err(tid, *t.tblob[err])
                return
            waiting = sum(1 for d in deps if tstate[d] != MEMORY)
        else:
            waiting = 0
        t.twaiting[tid] = waiting
        if waiting == 0:
            self.make_ready(tid)

    # ------------------------------------------------------------ forgotten
    def forget_independent(self, tids: list[int]) -> None:
        """memory -> forgotten for the common case: inline results of tasks with no inputs,
        no dependents and nothing pending, that one client wanted and released."""
        t = self.tasks
        twanted, tstate, tkey, tfid, tblob, tpayload = t.twanted, t.tstate, t.tkey, t.tfid, t.tblob, t.tpayload
        key_tid, functions = t.key_tid, t.functions
        for tid in tids:
            twanted[tid] = None
            tstate[tid] = FORGOTTEN
            del key_tid[tkey[tid]]
            fid = tfid[tid]
            entry = functions[fid]
            entry[1] -= 1
            if entry[1] == 0:
                del functions[fid]
                t.duration.pop(fid, None)
            tblob[tid] = tpayload[tid] = tfid[tid] = None
        n = len(tids)
        t.nstate[MEMORY] -= n
        t.nstate[FORGOTTEN] += n
        t.free.extend(tids)

    def forget(self, tid: int) -> None:
        """* -> forgotten for ``tid``, and with it every released or erred input that
        nothing else needs."""
        stack = [tid]
        t = self.tasks
        tstate, tkey, tfid, tdeps, tdependents = t.tstate, t.tkey, t.tfid, t.tdeps, t.tdependents
        tpayload, tblob, trestrict, tpending = t.tpayload, t.tblob, t.trestrict, t.tpending
        twanted, twaiters, ns = t.twanted, t.twaiters, t.nstate
        key_tid, functions, tracked, free = t.key_tid, t.functions, self.tracked, t.free
        outbox = self.outbox
        local = outbox.local
        recomputing = self.queues.recomputing
        while stack:
            x = stack.pop()
            st = tstate[x]
            if st == FORGOTTEN:
                continue
            if st == MEMORY:
                self._free_data(x)
            elif st == PROCESSING:
                self._unprocess(x, answered=False)
                ns[PROCESSING] += 1  # counted down below
            elif st == QUEUED:
                self.queues.stale += 1
            if st <= PROCESSING:
                self._deactivate(x)
            tstate[x] = FORGOTTEN
            ns[st] -= 1
            ns[FORGOTTEN] += 1
            t.twaiting[x] = 0
            twanted[x] = None
            if tracked:
                tracked.discard(x)
            if recomputing:
                recomputing.discard(x)
            key = tkey[x]
            if key_tid.get(key) == x:
                del key_tid[key]
            fid = tfid[x]
            if fid is not None:
                entry = functions[fid]
                entry[1] -= 1
                if entry[1] == 0:
                    del functions[fid]
                    t.duration.pop(fid, None)
                    if local:
                        outbox.released.append(entry[0])
            if local:
                outbox.release_blob(tpayload[x])
                err = tblob[x]
                if type(err) is tuple and type(err[0]) is bytes:
                    outbox.released.append(err[0])
            tpayload[x] = tfid[x] = tblob[x] = trestrict[x] = None
            deps = tdeps[x]
            if deps is not None:
                tdeps[x] = None
                for d in deps:
                    dl = tdependents[d]
                    if dl is None:
                        continue
                    if dl[-1] == x:  # dependents are mostly forgotten in the order they came
                        dl.pop()
                    elif x in dl:
                        dl.remove(x)
                    if dl:
                        continue
                    tdependents[d] = None
                    sd = tstate[d]
                    if twanted[d] is None and twaiters[d] == 0 and sd != FORGOTTEN:
                        if sd == MEMORY:
                            self._free_data(d)
                            tstate[d] = sd = RELEASED
                            ns[MEMORY] -= 1
                            ns[RELEASED] += 1
                        if sd == RELEASED or sd == ERRED:
                            stack.append(d)
            if tpending[x] == 0:
                free.append(x)

    def worker_gone(self, wi: WorkerInfo) -> None:
        """Nothing pends on a dead worker's cancels any more."""
        t = self.tasks
        for tid, n in wi.cancelling.items():
            t.tpending[tid] -= n
            if t.tstate[tid] == FORGOTTEN and t.tpending[tid] == 0:
                t.free.append(tid)
        wi.cancelling = {}
