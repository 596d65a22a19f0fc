"""Outbox: what the state machine has decided to tell clients and workers, until ``flush``
turns it into instructions (``instructions.py``)."""

from __future__ import annotations

from frisky.scheduler.instructions import Cancel, Erred, Free, ReleaseBlobs, Results, Running
from frisky.scheduler.task_states import ERRED, MEMORY, PROCESSING
from frisky.scheduler.tasks import TaskTable
from frisky.scheduler.workers import Workers


class Outbox:
    def __init__(self, local: bool) -> None:
        self.local = local  # in-process cluster: blobs are handles the server must release
        self.results: dict[int, list[int]] = {}  # client -> tids now in memory
        self.erred: dict[int, list[int]] = {}  # client -> tids now erred
        self.running: dict[int, list[int]] = {}  # client -> tracked tids handed to a worker
        self.free: dict[int, list[str]] = {}  # worker -> keys to drop
        self.cancel: dict[int, list[int]] = {}  # worker -> tids to drop
        self.released: list = []  # in-process handles to release

    def release_blob(self, blob) -> None:
        if self.local and blob is not None:
            self.released.append(blob)

    def drain(self, tasks: TaskTable, workers: Workers, clients: dict, out: list) -> None:
        """Append the pending messages to ``out`` as instructions, skipping those that no
        longer hold (a result since released, a client or worker since gone)."""
        tstate, tkey = tasks.tstate, tasks.tkey
        if self.running:
            for cid, tids in self.running.items():
                keys = [tkey[t] for t in tids if tstate[t] == PROCESSING]
                if keys and cid in clients:
                    out.append(Running(cid, keys))
            self.running = {}
        if self.results:
            twhere, tblob = tasks.twhere, tasks.tblob
            for cid, tids in self.results.items():
                if cid not in clients:
                    continue
                tids = [t for t in tids if tstate[t] == MEMORY]
                keys = list(map(tkey.__getitem__, tids))
                blobs = list(map(tblob.__getitem__, tids))
                trefs = tasks.trefs
                for i, t in enumerate(tids):
                    if twhere[t] >= 0:  # held by a worker: the client fetches it there
                        address = workers[twhere[t]].address
                        ref = trefs.get(t) if trefs else None
                        # a client on that host views it by reference (elsewhere: unusable, ignored)
                        blobs[i] = address if ref is None else [address, ref]
                if keys:
                    out.append(Results(cid, keys, blobs))
            self.results = {}
        if self.erred:
            for cid, tids in self.erred.items():
                if cid not in clients:
                    continue
                keys, excs, tbs = [], [], []
                for tid in tids:
                    if tstate[tid] != ERRED:
                        continue
                    keys.append(tkey[tid])
                    exc, tb = tasks.tblob[tid]
                    excs.append(exc)
                    tbs.append(tb)
                if keys:
                    out.append(Erred(cid, keys, excs, tbs))
            self.erred = {}
        if self.free:
            for w, keys in self.free.items():
                if workers[w].alive:
                    out.append(Free(w, keys))
            self.free = {}
        if self.cancel:
            for w, tids in self.cancel.items():
                wi = workers[w]
                if wi.alive:
                    # not those it answered for meanwhile (a result that crossed the decision)
                    tids = [t for t in tids if t in wi.cancelling]
                    if tids:
                        out.append(Cancel(w, tids))
            self.cancel = {}
        if self.released:
            out.append(ReleaseBlobs(self.released))
            self.released = []
