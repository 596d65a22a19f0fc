"""SchedulerState: every scheduling decision, and no sockets, no clocks, no pickles.

Events come in as method calls (``submit``, ``finished``, ``remove_worker`` …); what
the server must send goes out of :meth:`SchedulerState.flush` as instruction tuples.
Tasks are dense ints (``tid``) indexing parallel lists ("columns"); keys map to tids
once, at submission, and the hot loops touch only ints and lists.

Task life: ``waiting -> queued -> processing -> memory``, or ``erred``; ``released`` once
no client wants the result and no dependent needs it (the recipe stays while
dependents exist, so lost data can be recomputed); then ``forgotten``.

This module holds the columns, task life and client events; ``worker_events.py`` the
events workers cause, ``placement.py`` the choice of workers and the instructions.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Any

from frisky import config
from frisky.scheduler.placement import Placement
from frisky.scheduler.task_states import (
    _ACTIVE,
    ERRED,
    FORGOTTEN,
    MEMORY,
    PROCESSING,
    QUEUED,
    RELEASED,
    STATE_NAMES,
    WAITING,
)
from frisky.scheduler.worker_events import WorkerEvents, WorkerInfo


class SchedulerState(WorkerEvents, Placement):
    """The scheduler's task state machine. Feed it events; send what :meth:`flush` returns."""

    def __init__(self, *, allowed_failures: int | None = None, local: bool = False) -> None:
        self.allowed_failures = config.get("allowed_failures", allowed_failures)
        self.target = config.get("target_queue_seconds")
        self.unknown = config.get("unknown_task_duration")
        self.min_per_thread = config.get("min_tasks_per_thread")
        self.max_per_thread = config.get("max_tasks_per_thread")
        self.max_batch = config.get("max_batch")
        self.local = local  # in-process cluster: blobs are handles the server must release
        # task columns, indexed by tid
        self.tkey: list[Any] = []
        self.tstate: list[int] = []
        self.tfid: list[Any] = []
        self.tpayload: list[Any] = []
        self.tdeps: list[Any] = []  # tuple of dep tids or None
        self.tdependents: list[Any] = []  # list of tids or None
        self.twaiting: list[int] = []  # deps not in memory
        self.twaiters: list[int] = []  # active dependents that need this result
        self.tblob: list[Any] = []  # inline result bytes, or the error (blob, traceback)
        self.tnbytes: list[int] = []
        self.twhere: list[int] = []  # worker holding a large result, -1 if none
        self.tproc: list[int] = []  # worker processing it, -1 if none
        self.twanted: list[Any] = []  # None | client id | set of client ids
        self.tretries: list[int] = []
        self.tprio: list[int] = []
        self.trestrict: list[Any] = []  # None or tuple of worker addresses
        self.tfailures: list[int] = []
        self.tpending: list[int] = []  # compute messages sent and not yet answered
        self.key_tid: dict[str, int] = {}
        self.free_tids: list[int] = []
        # functions: fid -> [blob, number of tasks using it]
        self.functions: dict[bytes, list] = {}
        self.duration: dict[bytes, float] = {}  # fid -> mean seconds per call
        # workers and clients
        self.workers: list[WorkerInfo | None] = []
        self.worker_by_address: dict[str, int] = {}
        self.worker_by_name: dict[str, int] = {}  # restrictions may name workers, as in dask
        self.clients: dict[int, set[int]] = {}  # client id -> tids it wants
        self.tracked: set[int] = set()  # tids whose client is told when they start (executor submit)
        self._running: dict[int, list[int]] = {}
        # ready tasks without a preferred worker
        self.ready: deque[int] = deque()
        self.ready_prio: list = []  # heap of (-priority, seq, tid)
        self._seq = 0
        # pending output
        self._results: dict[int, list[int]] = {}
        self._erred: dict[int, list[int]] = {}
        self._out: list[tuple] = []
        self._free: dict[int, list[str]] = {}  # worker -> keys to drop
        self._cancel: dict[int, list[int]] = {}  # worker -> tids to drop
        self._deferred: list[int] = []
        self._released_blobs: list = []
        self.n_processing = 0
        self.counts = {"submitted": 0, "finished": 0, "erred": 0, "recomputed": 0}

    # ------------------------------------------------------------------ tasks
    def _alloc(self, key: str) -> int:
        return self._alloc_many([key])[0]

    def _alloc_many(self, keys: list) -> list[int]:
        """Fresh tids for ``keys``: freed ones first, then new rows, each column set in bulk.
        Submission fills tfid, tpayload, tdeps, twanted, tretries, tprio and trestrict."""
        n = len(keys)
        free = self.free_tids
        reuse = min(n, len(free))
        tids: list[int] = []
        if reuse:
            tids = free[len(free) - reuse:]
            del free[len(free) - reuse:]
            tkey = self.tkey
            for t, k in zip(tids, keys):
                tkey[t] = k
            for col, value in ((self.tstate, WAITING), (self.tdeps, None), (self.tdependents, None), (self.twaiting, 0),
                               (self.twaiters, 0), (self.tblob, None), (self.tnbytes, 0), (self.twhere, -1),
                               (self.tproc, -1), (self.tfailures, 0), (self.tpending, 0)):
                for t in tids:
                    col[t] = value
        m = n - reuse
        if m:
            start = len(self.tkey)
            self.tkey.extend(keys[reuse:] if reuse else keys)
            for col, value in ((self.tstate, WAITING), (self.tfid, None), (self.tpayload, None),
                               (self.tdeps, None), (self.tdependents, None), (self.twaiting, 0),
                               (self.twaiters, 0), (self.tblob, None), (self.tnbytes, 0), (self.twhere, -1),
                               (self.tproc, -1), (self.twanted, None), (self.tretries, 0), (self.tprio, 0),
                               (self.trestrict, None), (self.tfailures, 0), (self.tpending, 0)):
                col.extend([value] * m)
            tids.extend(range(start, start + m))
        self.key_tid.update(zip(keys, tids))
        return tids

    def _want(self, tid: int, cid: int) -> None:
        w = self.twanted[tid]
        if w is None:
            self.twanted[tid] = cid
        elif type(w) is int:
            if w != cid:
                self.twanted[tid] = {w, cid}
        else:
            w.add(cid)
        self.clients[cid].add(tid)

    def _unwant(self, tid: int, cid: int) -> bool:
        """Drop ``cid`` from the wanters; True if nobody wants ``tid`` any more."""
        w = self.twanted[tid]
        if type(w) is int:
            if w == cid:
                self.twanted[tid] = None
        elif w is not None:
            w.discard(cid)
            if len(w) == 1:
                self.twanted[tid] = next(iter(w))
            elif not w:
                self.twanted[tid] = None
        return self.twanted[tid] is None

    def _wanters(self, tid: int):
        w = self.twanted[tid]
        if w is None:
            return ()
        if type(w) is int:
            return (w,)
        return tuple(w)

    def submit(
        self,
        cid: int,
        keys: list[str],
        fidx,
        fids: list[bytes],
        fn_blobs: list,
        payloads: list,
        deps=None,
        retries=0,
        priority=0,
        workers=None,
        track=False,
    ) -> None:
        """Add tasks for client ``cid``. Dependencies must precede their dependents.
        ``track``: report each task's start (``running``) to the client."""
        functions = self.functions
        for fid, blob in zip(fids, fn_blobs):
            if fid not in functions:  # (in-process the fid is the handle itself)
                functions[fid] = [blob, 0]
        key_tid = self.key_tid
        tstate = self.tstate
        wants = self.clients.setdefault(cid, set())
        one_fid = fids[fidx] if type(fidx) is int else None
        restrict = tuple(workers) if workers else None
        per_retries = type(retries) is list
        per_prio = type(priority) is list
        results = None
        new: list[int] | None = None  # positions of keys not known yet, when some are known
        for i, key in enumerate(keys):
            tid = key_tid.get(key)
            if tid is None:
                if new is not None:
                    new.append(i)
                continue
            if new is None:
                new = list(range(i))
            self._want(tid, cid)  # a known key: this client wants it too
            st = tstate[tid]
            if st == MEMORY:
                if results is None:
                    results = self._results.setdefault(cid, [])
                results.append(tid)
            elif st == ERRED:
                self._erred.setdefault(cid, []).append(tid)
            elif st == RELEASED:
                self._recompute(tid)
            if self.local and payloads[i] is not None:
                self._released_blobs.append(payloads[i])
        new_keys = keys if new is None else [keys[i] for i in new]
        if len(set(new_keys)) < len(new_keys):  # the same key twice in one batch
            new = self._first_occurrences(keys, payloads, new)
            new_keys = [keys[i] for i in new]
        if new is not None:
            keys = new_keys
            payloads = [payloads[i] for i in new]
            if one_fid is None:
                fidx = [fidx[i] for i in new]
            if deps is not None:
                deps = [deps[i] for i in new]
            if per_retries:
                retries = [retries[i] for i in new]
            if per_prio:
                priority = [priority[i] for i in new]
        if not keys:
            return
        base = len(self.tkey)
        tids = self._alloc_many(keys)
        n = len(tids)
        self.counts["submitted"] += n
        if track:
            self.tracked.update(tids)
        wants.update(tids)
        if tids[0] == base:  # all new rows, one range (freed ones come first): fill by slices
            self._fill_range(base, n, cid, payloads, one_fid, fids, fidx, retries, priority, restrict)
        else:
            self._fill(tids, cid, payloads, one_fid, fids, fidx, retries, priority, restrict)
        if deps is None:
            make_ready = self._make_ready
            for t in tids:
                make_ready(t)
            return
        tdeps, tdependents, twaiting, twaiters = self.tdeps, self.tdependents, self.twaiting, self.twaiters
        for t, key, dep_keys in zip(tids, keys, deps):
            if not dep_keys:
                self._make_ready(t)
                continue
            try:
                dtids = tuple([key_tid[dk] for dk in dep_keys])
            except KeyError as e:
                self._set_erred(t, ["lost", f"dependency {e.args[0]!r} of {key!r} is unknown"], "")
                continue
            tdeps[t] = dtids
            # the common case inline: every dependency waiting, queued, running or in memory
            waiting = 0
            for d in dtids:
                st = tstate[d]
                if st > MEMORY:  # erred or released: the general path
                    break
                if st != MEMORY:
                    waiting += 1
            else:
                for d in dtids:
                    dl = tdependents[d]
                    if dl is None:
                        tdependents[d] = [t]
                    else:
                        dl.append(t)
                    twaiters[d] += 1
                twaiting[t] = waiting
                if waiting == 0:
                    self._make_ready(t)
                continue
            self._link_and_start(t, dtids)

    def _fill(self, tids, cid, payloads, one_fid, fids, fidx, retries, priority, restrict) -> None:
        """Set the submitted columns of fresh tasks ``tids``."""
        functions = self.functions
        n = len(tids)
        per_retries, per_prio = type(retries) is list, type(priority) is list
        tfid, tpayload, twanted = self.tfid, self.tpayload, self.twanted
        tretries, tprio, trestrict = self.tretries, self.tprio, self.trestrict
        for t, payload in zip(tids, payloads):
            tpayload[t] = payload
            twanted[t] = cid
            trestrict[t] = restrict
        if one_fid is not None:
            for t in tids:
                tfid[t] = one_fid
            functions[one_fid][1] += n
        else:
            for t, i in zip(tids, fidx):
                fid = tfid[t] = fids[i]
                functions[fid][1] += 1
        for t, r in zip(tids, retries if per_retries else itertools.repeat(retries, n)):
            tretries[t] = r
        for t, p in zip(tids, priority if per_prio else itertools.repeat(priority, n)):
            tprio[t] = p

    def _fill_range(self, base, n, cid, payloads, one_fid, fids, fidx, retries, priority, restrict) -> None:
        """:meth:`_fill` for the new rows ``base .. base + n``, by slice assignment."""
        end = base + n
        self.tpayload[base:end] = payloads
        self.twanted[base:end] = [cid] * n
        if restrict is not None:
            self.trestrict[base:end] = [restrict] * n
        functions = self.functions
        if one_fid is not None:
            self.tfid[base:end] = [one_fid] * n
            functions[one_fid][1] += n
        else:
            fn_of = [fids[i] for i in fidx]
            self.tfid[base:end] = fn_of
            for fid in fn_of:
                functions[fid][1] += 1
        if type(retries) is list or retries:
            self.tretries[base:end] = retries if type(retries) is list else [retries] * n
        if type(priority) is list or priority:
            self.tprio[base:end] = priority if type(priority) is list else [priority] * n

    def _first_occurrences(self, keys: list, payloads: list, new: list[int] | None) -> list[int]:
        """Positions of the first occurrence of each new key; later ones are the same task."""
        seen: set = set()
        first = []
        for i in (range(len(keys)) if new is None else new):
            if keys[i] in seen:
                if self.local and payloads[i] is not None:
                    self._released_blobs.append(payloads[i])
                continue
            seen.add(keys[i])
            first.append(i)
        return first

    def _link_and_start(self, tid: int, dtids: tuple) -> None:
        tstate = self.tstate
        waiting = 0
        err = None
        for d in dtids:
            dl = self.tdependents[d]
            if dl is None:
                self.tdependents[d] = [tid]
            else:
                dl.append(tid)
            st = tstate[d]
            if st == MEMORY:
                continue
            if st == ERRED:
                err = d
            elif st == RELEASED:
                self._recompute(d)
            waiting += 1
        if err is not None:
            self._set_erred(tid, *self.tblob[err])
            return
        self.twaiting[tid] = waiting
        for d in dtids:
            self.twaiters[d] += 1
        if waiting == 0:
            self._make_ready(tid)

    def _make_ready(self, tid: int) -> None:
        self.tstate[tid] = QUEUED
        restrict = self.trestrict[tid]
        if restrict is not None:
            best = None
            for ref in restrict:
                w = self.worker_for(ref)
                if w is not None and (best is None or len(self.workers[w].processing) < len(self.workers[best].processing)):
                    best = w
            if best is None:
                self.ready.append(tid)  # no such worker yet: dispatch skips it until one joins
            else:
                self.workers[best].ready.append(tid)
            return
        deps = self.tdeps[tid]
        if deps is not None:
            best, best_bytes = -1, 0
            twhere = self.twhere
            for d in deps:
                w = twhere[d]
                if w >= 0 and self.tnbytes[d] > best_bytes and self.workers[w].alive:
                    best, best_bytes = w, self.tnbytes[d]
            if best >= 0:
                self.workers[best].ready.append(tid)
                return
        prio = self.tprio[tid]
        if prio:
            self._seq += 1
            heapq.heappush(self.ready_prio, (-prio, self._seq, tid))
        else:
            self.ready.append(tid)

    def _recompute(self, tid: int) -> None:
        """Bring a released task back to computation (its data was freed or lost)."""
        if self.tpayload[tid] is None:
            self._set_erred(tid, ["lost", f"data of {self.tkey[tid]!r} was lost and cannot be recomputed"], "")
            return
        self.counts["recomputed"] += 1
        self.tstate[tid] = WAITING
        deps = self.tdeps[tid]
        waiting = 0
        if deps is not None:
            for d in deps:
                st = self.tstate[d]
                if st == RELEASED:
                    self._recompute(d)
                    st = self.tstate[d]
                if st == ERRED:
                    self._set_erred(tid, *self.tblob[d])
                    return
                if st != MEMORY:
                    waiting += 1
            for d in deps:
                self.twaiters[d] += 1
        self.twaiting[tid] = waiting
        if waiting == 0:
            self._make_ready(tid)

    def _deactivate(self, tid: int) -> None:
        """``tid`` no longer needs its dependencies' data."""
        deps = self.tdeps[tid]
        if deps is None:
            return
        twaiters = self.twaiters
        for d in deps:
            twaiters[d] -= 1
            if twaiters[d] == 0 and self.twanted[d] is None:
                self._release(d)

    def _release(self, tid: int) -> None:
        """Nobody needs ``tid``'s result any more: free it, and forget it if it has no dependents."""
        st = self.tstate[tid]
        if st == MEMORY:
            self._free_data(tid)
            self.tstate[tid] = RELEASED
        elif st in _ACTIVE:
            if st == PROCESSING:
                self._unprocess(tid, cancel=True)
            self.tstate[tid] = RELEASED
            self._deactivate(tid)
        if not self.tdependents[tid]:
            self._forget(tid)

    def _free_data(self, tid: int) -> None:
        w = self.twhere[tid]
        if w >= 0:
            self.twhere[tid] = -1
            wi = self.workers[w]
            if wi is not None and wi.alive:
                wi.nbytes -= self.tnbytes[tid]
                self._free.setdefault(w, []).append(self.tkey[tid])
        blob = self.tblob[tid]
        if blob is not None:
            if self.local and type(blob) is bytes:
                self._released_blobs.append(blob)
            self.tblob[tid] = None

    def _forget(self, tid: int) -> None:
        """Drop ``tid`` for good, and with it every released dependency nothing else needs."""
        stack = [tid]
        tstate, tkey, tfid, tdeps, tdependents = self.tstate, self.tkey, self.tfid, self.tdeps, self.tdependents
        tpayload, tblob, trestrict, tpending = self.tpayload, self.tblob, self.trestrict, self.tpending
        twanted, twaiters = self.twanted, self.twaiters
        key_tid, functions, tracked, free_tids = self.key_tid, self.functions, self.tracked, self.free_tids
        local = self.local
        released = self._released_blobs
        while stack:
            t = stack.pop()
            st = tstate[t]
            if st == FORGOTTEN:
                continue
            if st == MEMORY:
                self._free_data(t)
            elif st == PROCESSING:
                self._unprocess(t, cancel=True)
            if st in _ACTIVE:
                self._deactivate(t)
            tstate[t] = FORGOTTEN
            if tracked:
                tracked.discard(t)
            key = tkey[t]
            if key_tid.get(key) == t:
                del key_tid[key]
            fid = tfid[t]
            if fid is not None:
                entry = functions[fid]
                entry[1] -= 1
                if entry[1] == 0:
                    del functions[fid]
                    self.duration.pop(fid, None)
                    if local:
                        released.append(entry[0])
            if local:
                released.append(tpayload[t])
                err = tblob[t]
                if type(err) is tuple and type(err[0]) is bytes:
                    released.append(err[0])
            tpayload[t] = tfid[t] = tblob[t] = trestrict[t] = None
            deps = tdeps[t]
            if deps is not None:
                tdeps[t] = None
                for d in deps:
                    dl = tdependents[d]
                    if dl is None:
                        continue
                    if dl[-1] == t:  # dependents are mostly forgotten in the order they came
                        dl.pop()
                    elif t in dl:
                        dl.remove(t)
                    if dl:
                        continue
                    tdependents[d] = None
                    sd = tstate[d]
                    if twanted[d] is None and twaiters[d] == 0 and sd != FORGOTTEN:
                        if sd == MEMORY:
                            self._free_data(d)
                            tstate[d] = sd = RELEASED
                        if sd == RELEASED or sd == ERRED:
                            stack.append(d)
            if tpending[t] == 0:
                free_tids.append(t)

    def _unprocess(self, tid: int, cancel: bool) -> None:
        w = self.tproc[tid]
        self.tproc[tid] = -1
        self.n_processing -= 1
        wi = self.workers[w]
        est = wi.processing.pop(tid, None)
        if est is not None:
            wi.load -= est
        if cancel and wi.alive:
            self._cancel.setdefault(w, []).append(tid)

    def _set_erred(self, tid: int, exc, tb: str) -> None:
        """Mark ``tid`` and every active dependent erred with ``exc`` (a blob or [kind, text])."""
        stack = [tid]
        tstate = self.tstate
        while stack:
            t = stack.pop()
            st = tstate[t]
            if st in (ERRED, FORGOTTEN, MEMORY):
                continue
            if st == PROCESSING:
                self._unprocess(t, cancel=t != tid)
            if st in _ACTIVE:
                self._deactivate(t)
            tstate[t] = ERRED
            self.counts["erred"] += 1
            self.tblob[t] = (exc, tb)
            for cid in self._wanters(t):
                self._erred.setdefault(cid, []).append(t)
            dl = self.tdependents[t]
            if dl:
                stack.extend(dl)

    # ---------------------------------------------------------------- clients
    def add_client(self, cid: int) -> None:
        self.clients.setdefault(cid, set())

    def remove_client(self, cid: int) -> None:
        self._running.pop(cid, None)
        tids = self.clients.pop(cid, None)
        if tids:
            self._release_tids(cid, list(tids), own=False)
        self._results.pop(cid, None)
        self._erred.pop(cid, None)

    def release(self, cid: int, keys: list[str]) -> None:
        """Client ``cid`` no longer wants ``keys``."""
        key_tid = self.key_tid
        tids = [t for t in map(key_tid.get, keys) if t is not None]
        self._release_tids(cid, tids, own=True)

    def _release_tids(self, cid: int, tids: list[int], own: bool) -> None:
        wants = self.clients.get(cid) if own else None
        tstate = self.tstate
        twanted = self.twanted
        tdeps = self.tdeps
        tdependents = self.tdependents
        twhere = self.twhere
        tpending = self.tpending
        twaiters = self.twaiters
        local = self.local
        for tid in tids:
            st = tstate[tid]
            if st == FORGOTTEN:
                continue
            if wants is not None:
                wants.discard(tid)
            if (st == MEMORY and twanted[tid] == cid and tdeps[tid] is None and tdependents[tid] is None
                    and twhere[tid] < 0 and tpending[tid] == 0 and not local and self.tfid[tid] is not None):
                # the common case, an independent task with an inline result: forget it here
                twanted[tid] = None
                tstate[tid] = FORGOTTEN
                del self.key_tid[self.tkey[tid]]
                entry = self.functions[self.tfid[tid]]
                entry[1] -= 1
                if entry[1] == 0:
                    del self.functions[self.tfid[tid]]
                self.tblob[tid] = self.tpayload[tid] = self.tfid[tid] = None
                self.free_tids.append(tid)
                continue
            if (st == MEMORY and twanted[tid] == cid and twhere[tid] < 0 and not local
                    and twaiters[tid] == 0 and tdependents[tid]):
                # a result kept as the recipe of its dependents (a reduction's inner node):
                # drop the inline result, keep the task
                twanted[tid] = None
                self.tblob[tid] = None
                tstate[tid] = RELEASED
                continue
            if self._unwant(tid, cid) and twaiters[tid] == 0:
                self._release(tid)

    cancel = release

    def cancel_queued(self, cid: int, keys: list[str]) -> list[str]:
        """Cancel, for client ``cid``, the tasks not yet sent to a worker; return their keys."""
        out = []
        for key in keys:
            tid = self.key_tid.get(key)
            if tid is None or self.tstate[tid] not in (WAITING, QUEUED):
                continue
            if self.twanted[tid] == cid and self.twaiters[tid] == 0:
                out.append(key)
                self.clients[cid].discard(tid)
                self._unwant(tid, cid)
                self._release(tid)
        return out

    def scatter(self, cid: int, keys: list[str], inline: list, workers=None) -> list[tuple[int, int]]:
        """Register scattered values. Inline ones (bytes) are in memory at once; the others
        are returned as ``(tid, worker)`` for the server to store on that worker."""
        to_store = []
        self.clients.setdefault(cid, set())
        alive = [w.idx for w in self.workers if w is not None and w.alive]
        if workers:
            alive = [w for w in map(self.worker_for, workers) if w is not None] or alive
        for key, blob in zip(keys, inline):
            tid = self.key_tid.get(key)
            if tid is not None:
                self._want(tid, cid)
                if self.tstate[tid] == MEMORY:
                    self._results.setdefault(cid, []).append(tid)
                continue
            tid = self._alloc(key)
            self.tfid[tid] = None
            self.tpayload[tid] = None
            self.tdeps[tid] = None
            self.tretries[tid] = 0
            self.tprio[tid] = 0
            self.trestrict[tid] = None
            self.twanted[tid] = cid
            self.clients[cid].add(tid)
            if blob is not None:
                self.tstate[tid] = MEMORY
                self.tblob[tid] = blob
                self.tnbytes[tid] = len(blob)
                self._results.setdefault(cid, []).append(tid)
            elif not alive:
                self._set_erred(tid, ["lost", "no workers to scatter to"], "")
            else:
                w = min(alive, key=lambda i: self.workers[i].nbytes)
                wi = self.workers[w]
                self.tstate[tid] = PROCESSING
                self.tproc[tid] = w
                self.tpending[tid] += 1
                self.n_processing += 1
                wi.processing[tid] = 0.0
                to_store.append((tid, w))
        return to_store

    def where(self, keys: list[str]) -> list:
        """For each key: its inline blob, the address of the worker holding it, or None."""
        out = []
        for key in keys:
            tid = self.key_tid.get(key)
            if tid is None or self.tstate[tid] != MEMORY:
                out.append(None)
            elif self.twhere[tid] >= 0:
                out.append(self.workers[self.twhere[tid]].address)
            else:
                out.append(self.tblob[tid])
        return out

    # ------------------------------------------------------------------ views
    def task_state(self, key: str) -> str | None:
        tid = self.key_tid.get(key)
        return None if tid is None else STATE_NAMES[self.tstate[tid]]

    def state_counts(self) -> dict[str, int]:
        counts = [0] * len(STATE_NAMES)
        for tid in self.key_tid.values():
            counts[self.tstate[tid]] += 1
        return {STATE_NAMES[i]: c for i, c in enumerate(counts) if c}

    def info(self) -> dict:
        return {
            "workers": {
                wi.address: {
                    "name": wi.name, "pid": wi.pid, "nthreads": wi.nthreads,
                    "memory_limit": wi.memory_limit, "host": wi.host,
                    "processing": len(wi.processing), "nbytes": wi.nbytes,
                    "metrics": wi.metrics,
                }
                for wi in self.alive_workers()
            },
            "tasks": self.state_counts(),
            "counts": dict(self.counts),
            "clients": len(self.clients),
        }
