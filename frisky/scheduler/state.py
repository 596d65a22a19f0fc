"""SchedulerState: every scheduling decision, and no sockets, no clocks, no pickles.

Events come in as method calls (``submit``, ``finished``, ``remove_worker`` …); what
the server must send goes out of :meth:`SchedulerState.flush` as instruction tuples.
Tasks are dense ints (``tid``) indexing parallel lists ("columns"); keys map to tids
once, at submission, and the hot loops touch only ints and lists.

Task life: ``waiting -> queued -> processing -> memory``, or ``erred``; ``released`` once
no client wants the result and no dependent needs it (the recipe stays while
dependents exist, so lost data can be recomputed); then ``forgotten``.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Any

from frisky import config

WAITING, QUEUED, PROCESSING, MEMORY, ERRED, RELEASED, FORGOTTEN = range(7)
STATE_NAMES = ("waiting", "queued", "processing", "memory", "erred", "released", "forgotten")
_ACTIVE = (WAITING, QUEUED, PROCESSING)


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


class SchedulerState:
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
            for addr in restrict:
                w = self.worker_by_address.get(addr)
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
            alive = [self.worker_by_address[a] for a in workers if a in self.worker_by_address] or alive
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

    # ---------------------------------------------------------------- workers
    def add_worker(self, info: dict) -> int:
        """A worker joined; returns its index."""
        w = len(self.workers)
        wi = WorkerInfo(w, info)
        self.workers.append(wi)
        old = self.worker_by_address.get(wi.address)
        if old is not None:
            self.remove_worker(old)
        self.worker_by_address[wi.address] = w
        # restricted tasks waiting for this worker
        if self.ready:
            keep = deque()
            for tid in self.ready:
                r = self.trestrict[tid]
                if r is not None and wi.address in r and self.tstate[tid] == QUEUED:
                    wi.ready.append(tid)
                else:
                    keep.append(tid)
            self.ready = keep
        return w

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

    # --------------------------------------------------------------- dispatch
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
        address = wi.address
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
                if r is not None and address not in r:
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
