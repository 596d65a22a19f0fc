"""Every invariant of :class:`~frisky.scheduler.state.SchedulerState`, checked from scratch.

O(tasks): run after each batch of events when the ``validate`` setting is on (tests),
never in production or benchmarks.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from frisky.scheduler.task_states import (
    ERRED,
    FORGOTTEN,
    MEMORY,
    PROCESSING,
    QUEUED,
    RELEASED,
    STATE_NAMES,
    WAITING,
)

if TYPE_CHECKING:
    from frisky.scheduler.state import SchedulerState


def _fail(tid: int, s: SchedulerState, why: str) -> AssertionError:
    t = s.tasks
    st = STATE_NAMES[t.tstate[tid]] if 0 <= tid < len(t.tstate) else "?"
    key = t.tkey[tid] if 0 <= tid < len(t.tkey) else "?"
    return AssertionError(f"task {tid} ({key!r}, {st}): {why}")


def validate(s: SchedulerState) -> None:
    t = s.tasks
    n = len(t.tkey)
    for name, _ in t.COLUMNS:
        assert len(getattr(t, name)) == n, f"column {name} has {len(getattr(t, name))} rows, not {n}"
    tstate, tdeps, tdependents = t.tstate, t.tdeps, t.tdependents
    nstate = [0] * len(STATE_NAMES)
    for st in tstate:
        nstate[st] += 1
    assert nstate == t.nstate, f"state counts {t.nstate} != actual {nstate}"
    # keys and free rows
    assert len(t.key_tid) == n - nstate[FORGOTTEN], "key_tid size differs from the live tasks"
    for key, tid in t.key_tid.items():
        if not (0 <= tid < n) or t.tkey[tid] != key or tstate[tid] == FORGOTTEN:
            raise AssertionError(f"key_tid[{key!r}] = {tid} does not name that live task")
    assert len(set(t.free)) == len(t.free), "a free row is listed twice"
    free = set(t.free)
    cancelling = Counter()
    workers = s.workers
    for wi in workers.all:
        cancelling.update(wi.cancelling)
    waiters = [0] * n
    fid_refs: Counter = Counter()
    clients = s.clients
    for tid in range(n):
        st = tstate[tid]
        expected_pending = (st == PROCESSING) + cancelling[tid]
        if t.tpending[tid] != expected_pending:
            raise _fail(tid, s, f"pending {t.tpending[tid]} != {expected_pending}")
        if st == FORGOTTEN:
            if (tid in free) != (t.tpending[tid] == 0):
                raise _fail(tid, s, "a forgotten row is free exactly when nothing pends on it")
            if tdeps[tid] is not None or tdependents[tid] is not None or t.twanted[tid] is not None:
                raise _fail(tid, s, "forgotten but still linked or wanted")
            if t.tproc[tid] != -1 or t.twhere[tid] != -1 or t.tfid[tid] is not None or t.tpayload[tid] is not None:
                raise _fail(tid, s, "forgotten but still placed or holding its recipe")
            continue
        if tid in free:
            raise _fail(tid, s, "a live task's row is in the free list")
        if t.tfid[tid] is not None:
            fid_refs[t.tfid[tid]] += 1
        deps = tdeps[tid]
        active = st <= PROCESSING
        if deps is not None:
            for d in deps:
                if tstate[d] == FORGOTTEN:
                    raise _fail(tid, s, f"input {d} is forgotten")
                if (tdependents[d] or []).count(tid) != deps.count(d):
                    raise _fail(tid, s, f"input {d} does not list it as a dependent")
                if active:
                    waiters[d] += 1
        dl = tdependents[tid]
        if dl is not None:
            if not dl:
                raise _fail(tid, s, "an empty dependents list (None expected)")
            for x in dl:
                if tstate[x] == FORGOTTEN or tid not in (tdeps[x] or ()):
                    raise _fail(tid, s, f"dependent {x} is forgotten or does not need it")
        if st == WAITING:
            not_in_memory = sum(1 for d in deps or () if tstate[d] != MEMORY)
            if t.twaiting[tid] != not_in_memory or not_in_memory == 0:
                raise _fail(tid, s, f"waiting on {t.twaiting[tid]}, but {not_in_memory} inputs are not in memory")
            if any(tstate[d] > MEMORY for d in deps or ()):
                raise _fail(tid, s, "waiting on an erred or released input")
        elif t.twaiting[tid] != 0:
            raise _fail(tid, s, f"twaiting {t.twaiting[tid]} outside waiting")
        if st in (QUEUED, PROCESSING) and any(tstate[d] != MEMORY for d in deps or ()):
            raise _fail(tid, s, "ready with an input not in memory")
        w = t.tproc[tid]
        if st == PROCESSING:
            if not (0 <= w < len(workers.all)) or not workers[w].alive or tid not in workers[w].processing:
                raise _fail(tid, s, f"processing on {w}, which does not list it or is dead")
        elif w != -1:
            raise _fail(tid, s, f"tproc {w} outside processing")
        h = t.twhere[tid]
        if st == MEMORY:
            if (h >= 0) == (t.tblob[tid] is not None):
                raise _fail(tid, s, "in memory: exactly one of a holder and an inline blob expected")
            if h >= 0 and (not workers[h].alive or tid not in workers[h].held):
                raise _fail(tid, s, f"held by {h}, which is dead or does not list it")
        elif h != -1:
            raise _fail(tid, s, f"twhere {h} outside memory")
        if st == ERRED and not (type(t.tblob[tid]) is tuple and len(t.tblob[tid]) == 2):
            raise _fail(tid, s, "erred without (exception, traceback)")
        if st == RELEASED:
            if t.tblob[tid] is not None or t.twanted[tid] is not None or not dl:
                raise _fail(tid, s, "released: no data, no wanter, and dependents expected")
        for cid in t.wanters(tid):
            if cid not in clients or tid not in clients[cid]:
                raise _fail(tid, s, f"wanted by client {cid}, which does not list it")
    for tid in range(n):
        if tstate[tid] != FORGOTTEN and t.twaiters[tid] != waiters[tid]:
            raise _fail(tid, s, f"twaiters {t.twaiters[tid]} != {waiters[tid]} active dependents")
    for tid, ref in t.trefs.items():
        if not (0 <= tid < n) or t.twhere[tid] < 0 or type(ref) is not bytes:
            raise AssertionError(f"task {tid} has a reference but no holder")
        if not workers[t.twhere[tid]].local:
            raise _fail(tid, s, "a reference kept from a worker on another host")
    for fid, (_, refs) in t.functions.items():
        if refs != fid_refs[fid] or refs <= 0:
            raise AssertionError(f"function {fid!r}: {refs} references counted, {fid_refs[fid]} tasks use it")
    for fid in fid_refs:
        if fid not in t.functions:
            raise AssertionError(f"function {fid!r} is used but not known")
    for cid, wants in clients.items():
        for tid in wants:
            if not (0 <= tid < n) or tstate[tid] == FORGOTTEN or cid not in t.wanters(tid):
                raise AssertionError(f"client {cid} lists task {tid}, which does not name it a wanter")
    # workers
    assert workers.alive == [wi for wi in workers.all if wi.alive], "alive list out of date"
    n_processing = 0
    for wi in workers.all:
        if not wi.alive:
            assert not (wi.processing or wi.held or wi.cancelling or wi.ready or wi.nbytes), \
                f"dead worker {wi.name} still has tasks or data"
            continue
        assert workers.by_address.get(wi.address) == wi.idx, f"worker {wi.name} not found by address"
        assert workers.by_name.get(wi.name) == wi.idx, f"worker {wi.name} not found by name"
        n_processing += len(wi.processing)
        for tid in wi.processing:
            if t.tproc[tid] != wi.idx:
                raise _fail(tid, s, f"listed as processing on {wi.name}")
        assert abs(wi.load - sum(wi.processing.values())) < 1e-6 * (1 + len(wi.processing)), \
            f"worker {wi.name}: load {wi.load} != its tasks' estimates"
        for tid in wi.held:
            if t.twhere[tid] != wi.idx:
                raise _fail(tid, s, f"listed as held by {wi.name}")
        assert wi.nbytes == sum(t.tnbytes[x] for x in wi.held), f"worker {wi.name}: nbytes out of date"
    assert len(workers.by_address) == len(workers.alive) == len(workers.by_name), "registry maps out of date"
    assert n_processing == nstate[PROCESSING], "processing sets differ from the processing tasks"
    # ready queues: every queued task is in one; the rest of the entries are counted stale
    q = s.queues
    entries = q.entries()
    queued_in = Counter(x for x in entries if tstate[x] == QUEUED)
    for tid in range(n):
        if tstate[tid] == QUEUED and not queued_in[tid]:
            raise _fail(tid, s, "queued but in no ready queue")
    assert len(entries) == nstate[QUEUED] + q.stale, \
        f"{len(entries)} queue entries != {nstate[QUEUED]} queued + {q.stale} stale"
    for tid in q.recomputing:
        if tstate[tid] != WAITING:
            raise _fail(tid, s, "marked for recomputation but not waiting")
    for tid in s.transitions.tracked:
        if tstate[tid] not in (WAITING, QUEUED, RELEASED):
            raise _fail(tid, s, "tracked but started or gone")
    assert nstate[ERRED] >= 0
