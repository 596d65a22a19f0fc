"""TaskTable: the scheduler's tasks as parallel columns indexed by dense int ids (tids).

It owns the rows (allocation, reuse, shrinking once they are all free), the key -> tid
map, the function blobs with their reference counts, and the count of tasks per state.
It decides nothing and never writes ``tstate`` except to make fresh rows: every change
of state is a transition in ``transitions.py``.
"""

from __future__ import annotations

from typing import Any

from frisky.scheduler.task_states import FORGOTTEN, STATE_NAMES

# rows at least this many, all free, are given back rather than kept for reuse
SHRINK_ROWS = 65536


class TaskTable:
    """Parallel columns, one row per task; freed rows are reused (``free``)."""

    COLUMNS = (
        # (name, value of a fresh or freed row)
        ("tstate", FORGOTTEN), ("tfid", None), ("tpayload", None),
        ("tdeps", None),  # tuple of dependency tids, or None
        ("tdependents", None),  # list of dependent tids, or None
        ("twaiting", 0),  # waiting tasks: dependencies not in memory
        ("twaiters", 0),  # active dependents (waiting, queued, processing)
        ("tblob", None),  # inline result bytes, or the error (exc, traceback)
        ("tnbytes", 0), ("twhere", -1),  # worker holding a large result, -1 if none
        ("tproc", -1),  # worker processing it, -1 if none
        ("twanted", None),  # None | client id | set of client ids
        ("tretries", 0), ("tprio", 0),
        ("trestrict", None),  # None or tuple of worker addresses or names
        ("tfailures", 0),
        ("tpending", 0),  # compute/store messages sent and not answered (nor the worker dead)
    )

    def __init__(self) -> None:
        self.tkey: list[Any] = []
        for name, _ in self.COLUMNS:
            setattr(self, name, [])
        self.key_tid: dict[str, int] = {}
        # held results in a same-host worker's arena: tid -> reference (forwarded, never read)
        self.trefs: dict[int, bytes] = {}
        self.free: list[int] = []  # forgotten rows nothing is pending on: reusable
        # fid -> [blob, number of live tasks using it]
        self.functions: dict[bytes, list] = {}
        self.duration: dict[bytes, float] = {}  # fid -> mean seconds per call
        self.nstate = [0] * len(STATE_NAMES)  # rows per state (forgotten includes free rows)

    def __len__(self) -> int:
        return len(self.tkey)

    def alloc(self, keys: list) -> list[int]:
        """Rows for ``keys``, freed ones first, in state forgotten with every column fresh;
        a transition then makes them tasks."""
        n = len(keys)
        free = self.free
        reuse = min(n, len(free))
        tids: list[int] = []
        if reuse:
            tids = free[len(free) - reuse:]
            del free[len(free) - reuse:]
            tkey = self.tkey
            # freed rows keep fresh values except these, which forgetting leaves as they were
            stale = ((self.twaiting, 0), (self.twaiters, 0), (self.tnbytes, 0), (self.twhere, -1),
                     (self.tproc, -1), (self.tfailures, 0), (self.tretries, 0), (self.tprio, 0),
                     (self.twanted, None), (self.tdependents, None))
            lo = tids[0]
            if tids[-1] - lo == reuse - 1 and tids == list(range(lo, lo + reuse)):
                # one run of rows (a large release frees its rows in order): slices, in C
                hi = lo + reuse
                tkey[lo:hi] = keys[:reuse]
                for col, value in stale:
                    col[lo:hi] = [value] * reuse
            else:
                for t, k in zip(tids, keys):
                    tkey[t] = k
                for col, value in stale:
                    for t in tids:
                        col[t] = value
        m = n - reuse
        if m:
            start = len(self.tkey)
            self.tkey.extend(keys[reuse:] if reuse else keys)
            for name, value in self.COLUMNS:
                getattr(self, name).extend([value] * m)
            tids.extend(range(start, start + m))
            self.nstate[FORGOTTEN] += m
        self.key_tid.update(zip(keys, tids))
        return tids

    def wanters(self, tid: int) -> tuple:
        w = self.twanted[tid]
        if w is None:
            return ()
        if type(w) is int:
            return (w,)
        return tuple(w)

    def want(self, tid: int, cid: int) -> None:
        w = self.twanted[tid]
        if w is None:
            self.twanted[tid] = cid
        elif type(w) is int:
            if w != cid:
                self.twanted[tid] = {w, cid}
        else:
            w.add(cid)

    def unwant(self, tid: int, cid: int) -> bool:
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

    def shrink(self) -> int:
        """Give back rows once every row is free; returns how many went (0 if none)."""
        n = len(self.tkey)
        if n < SHRINK_ROWS or len(self.free) != n:
            return 0
        self.tkey = []
        for name, _ in self.COLUMNS:
            setattr(self, name, [])
        self.free = []
        self.key_tid = {}  # a dict never shrinks as keys are deleted: a new one does
        self.nstate[FORGOTTEN] -= n
        return n

    def counts(self) -> dict[str, int]:
        """Live tasks per state name."""
        return {STATE_NAMES[i]: c for i, c in enumerate(self.nstate) if c and i != FORGOTTEN}
