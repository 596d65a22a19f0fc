"""SchedulerState driven by seeded random event sequences, validated after every event.

Simulated workers answer what they were sent (finish, err, miss an input, acknowledge a
cancel, die); simulated clients submit graphs with dependencies, retries, priorities and
restrictions, release, cancel, scatter and leave; a forger reports tasks it was never
sent. After each event ``validate()`` checks every invariant, and at the end every task
a client still wants has an outcome once the workers are left to finish.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from frisky.scheduler.instructions import Cancel, Compute, Erred, Results
from frisky.scheduler.state import SchedulerState
from frisky.scheduler.workers import Refused

FID = b"f" * 16


class Sim:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.s = SchedulerState(allowed_failures=2, validate=True)
        self.sent: dict[int, Counter] = {}  # worker -> tid -> times sent and not answered
        self.names = 0
        self.keys = 0
        self.clients = [1, 2]
        self.wanted: dict[int, set[str]] = {1: set(), 2: set()}
        self.done: dict[int, set[str]] = {1: set(), 2: set()}
        for c in self.clients:
            self.s.add_client(c)
        for _ in range(2):
            self.join()

    # ------------------------------------------------------------ events
    def step(self) -> None:
        r = self.r
        ev = r.choices(
            ["submit", "flush", "finish", "err", "missing", "join", "leave", "release", "cancel_queued",
             "scatter", "forge", "dup", "client"],
            weights=[14, 16, 24, 4, 2, 2, 2, 6, 2, 2, 2, 1, 1])[0]
        getattr(self, ev)()
        self.s.validate()

    def live(self) -> list[int]:
        return [wi.idx for wi in self.s.workers.alive]

    def join(self) -> None:
        self.names += 1
        w = self.s.add_worker({"address": f"sim://w{self.names}", "name": f"w{self.names}",
                               "nthreads": self.r.choice([1, 2])})
        self.sent[w] = Counter()

    def leave(self) -> None:
        live = self.live()
        if len(live) > 1 or (live and self.r.random() < 0.3):
            w = self.r.choice(live)
            self.s.remove_worker(w)
            self.sent.pop(w, None)
        if not self.live():
            self.join()

    def dup(self) -> None:
        live = self.live()
        if not live:
            return
        wi = self.s.workers[self.r.choice(live)]
        before = self.s.state_counts()
        with pytest.raises(Refused):
            self.s.add_worker({"address": wi.address, "name": "newcomer"})
        with pytest.raises(Refused):
            self.s.add_worker({"address": "sim://elsewhere", "name": wi.name})
        assert self.s.state_counts() == before and self.s.workers[wi.idx].alive

    def submit(self) -> None:
        r = self.r
        cid = r.choice(self.clients)
        n = r.randint(1, 6)
        known = [k for c in self.clients for k in self.wanted[c]]
        keys, deps = [], []
        for _ in range(n):
            if known and r.random() < 0.1:
                key = r.choice(known)  # resubmitting a known key
            else:
                self.keys += 1
                key = f"k{self.keys}"
            pool = known + keys
            d = r.sample(pool, min(len(pool), r.randint(0, 3))) if pool and r.random() < 0.6 else None
            if d and r.random() < 0.1:
                d = d + d[:1]  # the same input twice
            if d and r.random() < 0.03:
                d = d + ["never-submitted"]
            keys.append(key)
            deps.append(d)
        live = self.live()
        workers = None
        if live and r.random() < 0.1:
            workers = [self.s.workers[r.choice(live)].name if r.random() < 0.5 else "nobody-yet"]
        priority = [r.choice([0, 0, 5]) for _ in keys] if r.random() < 0.2 else 0
        retries = r.choice([0, 0, 1])
        self.s.submit(cid, keys, 0, [FID], [b"fn"], [b"p"] * n, deps=deps if any(deps) else None,
                      retries=retries, priority=priority, workers=workers)
        self.wanted[cid].update(keys)

    def flush(self) -> None:
        for ins in self.s.flush():
            if type(ins) is Compute:
                assert self.s.workers[ins.worker].alive
                box = self.sent[ins.worker]
                cancelling = self.s.workers[ins.worker].cancelling
                for tid in ins.tids:
                    assert not box[tid] or tid in cancelling, "sent twice to one worker without an answer"
                    box[tid] += 1
            elif type(ins) is Cancel:
                box = self.sent[ins.worker]
                for tid in ins.tids:
                    assert tid in box, "cancel of a task the worker was not sent"
                if self.r.random() < 0.7:  # dropped before it ran
                    for tid in ins.tids:
                        box[tid] -= 1
                    box += Counter()  # drop zeros
                    self.s.cancelled(ins.worker, ins.tids)
                # else: it already ran: a `finished` answers the cancel later
            elif type(ins) is Results:
                self.done[ins.client].update(ins.keys)
            elif type(ins) is Erred:
                self.done[ins.client].update(ins.keys)

    def _pick(self):
        boxes = [(w, box) for w, box in self.sent.items() if box]
        if not boxes:
            return None, []
        w, box = self.r.choice(boxes)
        tids = self.r.sample(sorted(box), min(len(box), self.r.randint(1, 4)))
        for tid in tids:
            box[tid] -= 1
            if not box[tid]:
                del box[tid]
        return w, tids

    def finish(self) -> None:
        w, tids = self._pick()
        if tids:
            held = [None if self.r.random() < 0.4 else b"r" for _ in tids]
            self.s.finished(w, tids, [10 if b is None else 1 for b in held], held,
                            [(FID, len(tids), 1e-4 * len(tids))])

    def err(self) -> None:
        w, tids = self._pick()
        if tids:
            self.s.erred(w, tids, [b"exc"] * len(tids), ["tb"] * len(tids))

    def missing(self) -> None:
        w, tids = self._pick()
        if tids:
            t = self.s.tasks
            tid = tids[0]
            deps = t.tdeps[tid] or ()
            self.s.missing(w, tid, [t.tkey[d] for d in deps][:1])
            for other in tids[1:]:
                self.sent[w][other] += 1

    def forge(self) -> None:
        """A worker reports a task sent to another one (or to nobody): nothing changes."""
        live = self.live()
        n = len(self.s.tasks)
        if not live or not n:
            return
        w = self.r.choice(live)
        tid = self.r.randrange(n)
        if tid in self.sent.get(w, {}) or tid in self.s.workers[w].cancelling:
            return
        before = (self.s.state_counts(), dict(self.s.outbox.results), len(self.s.tasks.free))
        ignored = self.s.counts["ignored_reports"]
        kind = self.r.choice(["finished", "erred", "cancelled", "missing"])
        if kind == "finished":
            self.s.finished(w, [tid], [1], [b"forged"])
        elif kind == "erred":
            self.s.erred(w, [tid], [b"forged"], ["tb"])
        elif kind == "cancelled":
            self.s.cancelled(w, [tid])
        else:
            self.s.missing(w, tid, [])
        assert (self.s.state_counts(), dict(self.s.outbox.results), len(self.s.tasks.free)) == before
        assert self.s.counts["ignored_reports"] == ignored + 1
        self.s.finished(w, [-1, n + 5], [1, 1], [b"x", b"x"])  # ids that name no task
        assert self.s.state_counts() == before[0]

    def release(self) -> None:
        cid = self.r.choice(self.clients)
        if self.wanted[cid]:
            keys = self.r.sample(sorted(self.wanted[cid]), min(len(self.wanted[cid]), self.r.randint(1, 5)))
            self.s.release(cid, keys)
            self.wanted[cid].difference_update(keys)
            self.done[cid].difference_update(keys)

    def cancel_queued(self) -> None:
        cid = self.r.choice(self.clients)
        if self.wanted[cid]:
            keys = sorted(self.wanted[cid])[-5:]
            for k in self.s.cancel_queued(cid, keys):
                self.wanted[cid].discard(k)

    def scatter(self) -> None:
        cid = self.r.choice(self.clients)
        self.keys += 1
        key = f"s{self.keys}"
        for tid, w in self.s.scatter(cid, [key], [b"v" if self.r.random() < 0.5 else None]):
            self.sent[w][tid] += 1
        self.wanted[cid].add(key)

    def client(self) -> None:
        """A client leaves; a new one comes."""
        cid = self.r.choice(self.clients)
        self.s.remove_client(cid)
        self.clients.remove(cid)
        del self.wanted[cid], self.done[cid]
        new = max(self.clients, default=0) + 10
        self.clients.append(new)
        self.wanted[new] = set()
        self.done[new] = set()
        self.s.add_client(new)

    # ------------------------------------------------------------ the end
    def settle(self) -> None:
        """Workers finish everything they are sent: every wanted key gets an outcome."""
        if not self.live():
            self.join()
        for _ in range(10_000):
            self.flush()
            w, tids = self._pick()
            while tids:
                self.s.finished(w, tids, [1] * len(tids), [b"r"] * len(tids))
                w, tids = self._pick()
            self.s.validate()
            if all(self.wanted[c] <= self.done[c] | self._restricted_to_nobody() for c in self.clients):
                return
        raise AssertionError(f"no outcome for {[self.wanted[c] - self.done[c] for c in self.clients]}")

    def _restricted_to_nobody(self) -> set[str]:
        """Keys that wait for a restricted task (or are one): its worker may never come back."""
        t = self.s.tasks
        stuck = {tid for tid in t.key_tid.values() if t.trestrict[tid] is not None}
        grew = True
        while grew:
            grew = False
            for tid in t.key_tid.values():
                if tid not in stuck and any(d in stuck for d in t.tdeps[tid] or ()):
                    stuck.add(tid)
                    grew = True
        return {t.tkey[tid] for tid in stuck}


@pytest.mark.timeout(120)
def test_random_event_sequences_keep_every_invariant():
    deadline = time.monotonic() + 25
    seeds = 0
    events = 0
    while time.monotonic() < deadline or seeds < 20:
        sim = Sim(seeds)
        try:
            for _ in range(sim.r.randint(20, 300)):
                sim.step()
                events += 1
            sim.settle()
        except AssertionError as e:
            raise AssertionError(f"seed {seeds} (PYTHONHASHSEED={os.environ.get('PYTHONHASHSEED')}): {e}") from e
        seeds += 1
        if seeds >= 3000:
            break
    assert seeds >= 20 and events >= 2000
