"""SchedulerState: every scheduling decision, and no sockets, no clocks, no pickles.

Events come in as method calls (``submit``, ``finished``, ``remove_worker`` …); what the
server must send goes out of :meth:`SchedulerState.flush` as named instructions
(``instructions.py``). Tasks are dense ints (``tid``) indexing parallel columns; keys
map to tids once, at submission, and the hot loops touch only ints and lists.

Task life: ``waiting -> queued -> processing -> memory``, or ``erred``; ``released`` once
no client wants the result and no dependent needs it (the recipe stays while dependents
exist, so lost data can be recomputed); then ``forgotten``.

The parts, each given the ones it needs: ``TaskTable`` (columns, rows), ``Workers``
(registry, occupancy), ``ReadyQueues``, ``Outbox``, ``Transitions`` (every state change),
``Placement`` (who runs what), ``WorkerEvents`` (joins, deaths, reports); this class
composes them and handles the clients' events.
"""

from __future__ import annotations

import itertools
from typing import Any

from frisky import config, procs
from frisky.scheduler.outbox import Outbox
from frisky.scheduler.placement import Placement
from frisky.scheduler.ready import ReadyQueues
from frisky.scheduler.task_states import ERRED, MEMORY, QUEUED, RELEASED, STATE_NAMES, WAITING
from frisky.scheduler.tasks import TaskTable
from frisky.scheduler.transitions import Transitions
from frisky.scheduler.worker_events import WorkerEvents
from frisky.scheduler.workers import WorkerInfo, Workers

# a release of at least this many rows gives memory back to the OS (malloc_trim)
TRIM_ROWS = 65536
# with validation on, states of at most this many rows are checked after every batch
VALIDATE_ROWS = 4000


class SchedulerState:
    """The scheduler's task state machine. Feed it events; send what :meth:`flush` returns."""

    def __init__(self, *, allowed_failures: int | None = None, local: bool = False,
                 validate: bool | None = None) -> None:
        self.local = local  # in-process cluster: blobs are handles the server must release
        # load the C library now: loaded at the first give-back, its objects would land in
        # the arenas of the peak and pin them
        procs.libc()
        self.validating = config.get("validate", validate)
        self.max_batch = config.get("max_batch")
        self.counts = {"submitted": 0, "finished": 0, "erred": 0, "recomputed": 0, "ignored_reports": 0}
        self.tasks = TaskTable()
        self.workers = Workers()
        self.queues = ReadyQueues(self.tasks, self.workers)
        self.outbox = Outbox(local)
        self.transitions = Transitions(self.tasks, self.workers, self.queues, self.outbox, self.counts)
        self.placement = Placement(self.tasks, self.workers, self.queues, self.transitions)
        self.worker_events = WorkerEvents(self.tasks, self.workers, self.queues, self.transitions,
                                          config.get("allowed_failures", allowed_failures))
        self.clients: dict[int, set[int]] = {}  # client id -> tids it wants
        self.trimmed = 0  # rows given back to the OS so far
        self._trim_due = False  # trim again once idle
        we = self.worker_events
        self.add_worker = we.add_worker
        self.remove_worker = we.remove_worker
        self.heartbeat = we.heartbeat
        self.finished = we.finished
        self.erred = we.erred
        self.cancelled = we.cancelled
        self.missing = we.missing

    # columns most callers read
    @property
    def tkey(self) -> list:
        return self.tasks.tkey

    @property
    def key_tid(self) -> dict:
        return self.tasks.key_tid

    @property
    def functions(self) -> dict:
        return self.tasks.functions

    # ------------------------------------------------------------------ submit
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
        t = self.tasks
        tr = self.transitions
        functions = t.functions
        for fid, blob in zip(fids, fn_blobs):
            if fid not in functions:  # (in-process the fid is the handle itself)
                functions[fid] = [blob, 0]
        key_tid = t.key_tid
        tstate = t.tstate
        wants = self.clients.setdefault(cid, set())
        one_fid = fids[fidx] if type(fidx) is int else None
        restrict = tuple(workers) if workers else None
        per_retries = type(retries) is list
        per_prio = type(priority) is list
        outbox = self.outbox
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
            t.want(tid, cid)  # a known key: this client wants it too
            wants.add(tid)
            st = tstate[tid]
            if st == MEMORY:
                if results is None:
                    results = outbox.results.setdefault(cid, [])
                results.append(tid)
            elif st == ERRED:
                outbox.erred.setdefault(cid, []).append(tid)
            elif st == RELEASED:
                tr.recompute(tid)
            outbox.release_blob(payloads[i])
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
            self._drop_unused(fids)
            return
        base = len(t)
        tids = t.alloc(keys)
        n = len(tids)
        self.counts["submitted"] += n
        if track:
            tr.tracked.update(tids)
        wants.update(tids)
        if tids[0] == base:  # all new rows, one range (freed ones come first): fill by slices
            self._fill_range(base, n, cid, payloads, one_fid, fids, fidx, retries, priority, restrict)
        else:
            self._fill(tids, cid, payloads, one_fid, fids, fidx, retries, priority, restrict)
        if len(fids) > 1 or one_fid is None:
            self._drop_unused(fids)
        tr.born(tids)
        if deps is None:
            if restrict is None and not per_prio and not priority:
                tr.make_ready_many(tids)
            else:
                for tid in tids:
                    tr.make_ready(tid)
            return
        dtids_per_task: list = []
        lost: list | None = None
        for tid, dep_keys in zip(tids, deps):
            if not dep_keys:
                dtids_per_task.append(None)
                continue
            try:
                dtids_per_task.append(tuple([key_tid[dk] for dk in dep_keys]))
            except KeyError as e:
                dtids_per_task.append(None)
                if lost is None:
                    lost = []
                lost.append((tid, e.args[0]))
        if lost is None:
            tr.link(tids, dtids_per_task)
            return
        gone = {tid for tid, _ in lost}
        keep = [i for i, tid in enumerate(tids) if tid not in gone]
        tr.link([tids[i] for i in keep], [dtids_per_task[i] for i in keep])
        for tid, dep in lost:
            tr.err(tid, ["lost", f"dependency {dep!r} of {t.tkey[tid]!r} is unknown"], "")

    def _drop_unused(self, fids: list) -> None:
        """Functions a submit brought that none of its new tasks use."""
        functions = self.tasks.functions
        for fid in fids:
            entry = functions.get(fid)
            if entry is not None and entry[1] == 0:
                del functions[fid]
                self.outbox.release_blob(entry[0])

    def _fill(self, tids, cid, payloads, one_fid, fids, fidx, retries, priority, restrict) -> None:
        """Set the submitted columns of fresh rows ``tids``."""
        t = self.tasks
        functions = t.functions
        n = len(tids)
        per_retries, per_prio = type(retries) is list, type(priority) is list
        tfid, tpayload, twanted = t.tfid, t.tpayload, t.twanted
        tretries, tprio, trestrict = t.tretries, t.tprio, t.trestrict
        for tid, payload in zip(tids, payloads):
            tpayload[tid] = payload
            twanted[tid] = cid
            trestrict[tid] = restrict
        if one_fid is not None:
            for tid in tids:
                tfid[tid] = one_fid
            functions[one_fid][1] += n
        else:
            for tid, i in zip(tids, fidx):
                fid = tfid[tid] = fids[i]
                functions[fid][1] += 1
        for tid, r in zip(tids, retries if per_retries else itertools.repeat(retries, n)):
            tretries[tid] = r
        for tid, p in zip(tids, priority if per_prio else itertools.repeat(priority, n)):
            tprio[tid] = p

    def _fill_range(self, base, n, cid, payloads, one_fid, fids, fidx, retries, priority, restrict) -> None:
        """:meth:`_fill` for the new rows ``base .. base + n``, by slice assignment."""
        t = self.tasks
        end = base + n
        t.tpayload[base:end] = payloads
        t.twanted[base:end] = [cid] * n
        if restrict is not None:
            t.trestrict[base:end] = [restrict] * n
        functions = t.functions
        if one_fid is not None:
            t.tfid[base:end] = [one_fid] * n
            functions[one_fid][1] += n
        else:
            fn_of = [fids[i] for i in fidx]
            t.tfid[base:end] = fn_of
            for fid in fn_of:
                functions[fid][1] += 1
        if type(retries) is list or retries:
            t.tretries[base:end] = retries if type(retries) is list else [retries] * n
        if type(priority) is list or priority:
            t.tprio[base:end] = priority if type(priority) is list else [priority] * n

    def _first_occurrences(self, keys: list, payloads: list, new: list[int] | None) -> list[int]:
        """Positions of the first occurrence of each new key; later ones are the same task."""
        seen: set = set()
        first = []
        for i in (range(len(keys)) if new is None else new):
            if keys[i] in seen:
                self.outbox.release_blob(payloads[i])
                continue
            seen.add(keys[i])
            first.append(i)
        return first

    # ---------------------------------------------------------------- clients
    def add_client(self, cid: int) -> None:
        self.clients.setdefault(cid, set())

    def remove_client(self, cid: int) -> None:
        self.outbox.running.pop(cid, None)
        tids = self.clients.pop(cid, None)
        if tids:
            self._release_tids(cid, list(tids), None)
        self.outbox.results.pop(cid, None)
        self.outbox.erred.pop(cid, None)

    def release(self, cid: int, keys: list[str]) -> None:
        """Client ``cid`` no longer wants ``keys`` (keys it never wanted are left alone)."""
        wants = self.clients.get(cid)
        if wants is None:
            return
        key_tid = self.tasks.key_tid
        tids = [tid for tid in map(key_tid.get, keys) if tid is not None]
        self._release_tids(cid, tids, wants)

    cancel = release

    def _release_tids(self, cid: int, tids: list[int], wants: set[int] | None) -> None:
        t = self.tasks
        tr = self.transitions
        tstate, twanted, tdeps, tdependents = t.tstate, t.twanted, t.tdeps, t.tdependents
        twhere, tpending, twaiters, tfid = t.twhere, t.tpending, t.twaiters, t.tfid
        local = self.local
        independent: list[int] = []
        for tid in tids:
            if wants is not None:
                if tid not in wants:  # the same key twice in one release
                    continue
                wants.discard(tid)
            st = tstate[tid]
            if (st == MEMORY and twanted[tid] == cid and tdeps[tid] is None and tdependents[tid] is None
                    and twhere[tid] < 0 and tpending[tid] == 0 and not local and tfid[tid] is not None):
                independent.append(tid)  # forgotten at once below (nothing else refers to them)
                continue
            if (st == MEMORY and twanted[tid] == cid and twhere[tid] < 0 and not local
                    and twaiters[tid] == 0 and tdependents[tid]):
                # a result kept as the recipe of its dependents (a reduction's inner node)
                twanted[tid] = None
                tr.drop_inline(tid)
                continue
            if t.unwant(tid, cid) and twaiters[tid] == 0:
                tr.release(tid)
        if independent:
            tr.forget_independent(independent)
        if wants is not None and not wants and len(tids) >= TRIM_ROWS:
            self.clients[cid] = set()  # a set never shrinks as it empties: a new one does

    def cancel_queued(self, cid: int, keys: list[str]) -> list[str]:
        """Cancel, for client ``cid``, the tasks not yet sent to a worker; return their keys."""
        t = self.tasks
        wants = self.clients.get(cid)
        out = []
        if wants is None:
            return out
        for key in keys:
            tid = t.key_tid.get(key)
            if tid is None or t.tstate[tid] not in (WAITING, QUEUED) or tid not in wants:
                continue
            if t.twanted[tid] == cid and t.twaiters[tid] == 0:
                out.append(key)
                wants.discard(tid)
                t.unwant(tid, cid)
                self.transitions.release(tid)
        return out

    def scatter(self, cid: int, keys: list[str], inline: list, workers=None) -> list[tuple[int, int]]:
        """Register scattered values. Inline ones (bytes) are in memory at once; the others
        are returned as ``(tid, worker)`` for the server to store on that worker."""
        t = self.tasks
        tr = self.transitions
        to_store = []
        wants = self.clients.setdefault(cid, set())
        alive = [wi.idx for wi in self.workers.alive]
        if workers:
            alive = [w for w in map(self.workers.worker_for, workers) if w is not None] or alive
        for key, blob in zip(keys, inline):
            tid = t.key_tid.get(key)
            if tid is not None:
                t.want(tid, cid)
                wants.add(tid)
                if t.tstate[tid] == MEMORY:
                    self.outbox.results.setdefault(cid, []).append(tid)
                continue
            (tid,) = t.alloc([key])
            t.twanted[tid] = cid
            wants.add(tid)
            tr.born([tid])
            if blob is not None:
                tr.stored_inline(tid, blob)
                self.outbox.results.setdefault(cid, []).append(tid)
            elif not alive:
                tr.err(tid, ["lost", "no workers to scatter to"], "")
            else:
                w = min(alive, key=lambda i: self.workers[i].nbytes)
                tr.storing(tid, self.workers[w])
                to_store.append((tid, w))
        return to_store

    def where(self, keys: list[str]) -> list:
        """For each key: its inline blob, the address of the worker holding it, or None."""
        t = self.tasks
        out = []
        for key in keys:
            tid = t.key_tid.get(key)
            if tid is None or t.tstate[tid] != MEMORY:
                out.append(None)
            elif t.twhere[tid] >= 0:
                out.append(self.workers[t.twhere[tid]].address)
            else:
                out.append(t.tblob[tid])
        return out

    # ------------------------------------------------------------------ output
    def flush(self) -> list[Any]:
        """Decide what runs where, and return every instruction for the server to send."""
        out: list[Any] = []
        placement = self.placement
        batch = self.max_batch
        for w, tids in placement.dispatch().items():
            for i in range(0, len(tids), batch):
                out.append(placement.compute(w, tids[i:i + batch]))
        self.outbox.drain(self.tasks, self.workers, self.clients, out)
        if len(self.tasks.free) >= TRIM_ROWS:
            self._give_back()
        elif self._trim_due and not out and not len(self.tasks):
            # once idle, again: buffers of the last messages were freed after the shrink
            self._trim_due = False
            procs.malloc_trim()
        if self.validating and len(self.tasks) <= VALIDATE_ROWS:
            # O(tasks) each time: small states (where bugs are found) are checked after
            # every batch; large ones are not, so a big test's scheduler keeps its pace
            self.validate()
        return out

    def _give_back(self) -> None:
        """Once every row is free, drop the columns and hand the memory to the OS."""
        n = self.tasks.shrink()
        if not n:
            return
        self.trimmed += n
        if len(self.transitions.tracked) == 0:
            self.transitions.tracked = set()
        for wi in self.workers.alive:
            if not wi.processing:
                wi.processing = {}
            if not wi.held:
                wi.held = set()
        for cid, wants in self.clients.items():
            if not wants:
                self.clients[cid] = set()
        self.queues.recomputing = set()
        import gc

        gc.collect()  # rare (a large release): cycles made meanwhile would pin the freed arenas
        procs.malloc_trim()
        self._trim_due = True

    def validate(self) -> None:
        """Check every invariant; raise AssertionError naming the first that fails."""
        from frisky.scheduler.validate import validate

        validate(self)

    # ------------------------------------------------------------------ views
    def alive_workers(self) -> list[WorkerInfo]:
        return self.workers.alive

    def worker_for(self, ref: str) -> int | None:
        return self.workers.worker_for(ref)

    def task_state(self, key: str) -> str | None:
        tid = self.tasks.key_tid.get(key)
        return None if tid is None else STATE_NAMES[self.tasks.tstate[tid]]

    def state_counts(self) -> dict[str, int]:
        """Live tasks per state (kept as they change, so this is O(states))."""
        return self.tasks.counts()

    def info(self) -> dict:
        return {
            "workers": {
                wi.address: {
                    "name": wi.name, "pid": wi.pid, "nthreads": wi.nthreads,
                    "memory_limit": wi.memory_limit, "host": wi.host,
                    "processing": len(wi.processing), "nbytes": wi.nbytes,
                    "metrics": wi.metrics,
                }
                for wi in self.workers.alive
            },
            "tasks": self.state_counts(),
            "counts": dict(self.counts),
            "clients": len(self.clients),
            "rows": len(self.tasks),  # task rows held, live or free for reuse
            "rows_given_back": self.trimmed,
        }
