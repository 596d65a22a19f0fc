"""The worker's task bookkeeping: which tasks can run, what to fetch, what to report.

No sockets and no threads: the server feeds events in and acts on what comes out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# a task as the worker holds it:
# (tid, key, fid, payload, dep_keys or None, batch context {"inline": …, "decoded": …, "fns": …})
Task = tuple


class WorkerState:
    """Dependencies of queued tasks, and the data fetched from peers for them."""

    def __init__(self) -> None:
        self.waiting: dict[int, Task] = {}  # tid -> task whose dependencies are being fetched
        self.missing_of: dict[int, set[str]] = {}  # tid -> dep keys not here yet
        self.needed_by: dict[str, set[int]] = {}  # dep key -> tids waiting for it
        self.fetching: dict[str, str] = {}  # dep key -> peer address asked
        self.fetched: dict[str, Any] = {}  # dep key -> value fetched from a peer
        self.fetched_refs: dict[str, int] = {}  # dep key -> queued tasks that will read it
        self.cancelled: set[int] = set()  # sent to the executor, then cancelled
        self.cap = 1 << 62  # bytes that may be in flight from peers at once
        self.in_flight = 0
        self.sizes: dict[str, int] = {}  # dep key -> nbytes, while fetching or fetched
        self.fetched_bytes = 0
        self.queued: list[tuple[str, str]] = []  # (key, address) waiting for room in flight

    def compute(self, tasks: list[Task], where: dict[str, str], have: Callable[[str], bool]) -> tuple[list[Task], dict[str, list[str]]]:
        """New tasks from the scheduler. Returns (ready tasks, {peer address: keys to fetch})."""
        ready: list[Task] = []
        fetch: dict[str, list[str]] = {}
        for task in tasks:
            deps = task[4]
            if not deps:
                ready.append(task)
                continue
            inline = task[5]["inline"]
            missing = set()
            for k in deps:
                if k in inline or have(k):
                    continue
                if k in self.fetched:
                    continue
                missing.add(k)
            for k in deps:
                if k in self.fetched or k in missing:
                    self.fetched_refs[k] = self.fetched_refs.get(k, 0) + 1
            if not missing:
                ready.append(task)
                continue
            tid = task[0]
            self.waiting[tid] = task
            self.missing_of[tid] = missing
            for k in missing:
                self.needed_by.setdefault(k, set()).add(tid)
                spec = where.get(k)
                if spec is None:
                    continue
                addr, nbytes = spec
                asked = self.fetching.get(k)
                if asked == addr:
                    continue
                if asked is not None:
                    # the scheduler says it is elsewhere now (its holder died and it was
                    # recomputed): give up on the old request, whose answer may never come
                    self._abandon(k)
                self.fetching[k] = addr
                self.sizes[k] = nbytes
                self._plan(k, addr, fetch)
        return ready, fetch

    def _abandon(self, key: str) -> None:
        """Forget the request for ``key``: sent (its bytes leave the in-flight count) or queued."""
        kept = [q for q in self.queued if q[0] != key]
        if len(kept) == len(self.queued):
            self.in_flight -= self.sizes.get(key, 0)
        self.queued = kept
        del self.fetching[key]

    def _plan(self, key: str, address: str, fetch: dict[str, list[str]]) -> None:
        """Fetch now if it fits in the bytes allowed in flight (one always may), else queue."""
        nbytes = self.sizes.get(key, 0)
        if self.in_flight and self.in_flight + nbytes > self.cap:
            self.queued.append((key, address))
            return
        self.in_flight += nbytes
        fetch.setdefault(address, []).append(key)

    def more_fetches(self) -> dict[str, list[str]]:
        """Queued fetches that now fit in flight."""
        fetch: dict[str, list[str]] = {}
        queued, self.queued = self.queued, []
        for key, address in queued:
            if key in self.fetching:
                self._plan(key, address, fetch)
        return fetch

    def got(self, values: dict[str, Any], missing: list[str], address: str) -> tuple[list[Task], list[tuple[int, list[str]]]]:
        """A peer answered. Returns (tasks now ready, [(tid, keys it lacks)] to report)."""
        ready: list[Task] = []
        report: list[tuple[int, list[str]]] = []
        # only answers to what we are still asking this peer for: not to a request
        # abandoned when the key moved to another worker
        fetching = self.fetching
        values = {k: v for k, v in values.items() if fetching.get(k) == address}
        missing = [k for k in missing if fetching.get(k) == address]
        for k, v in values.items():
            self.fetching.pop(k, None)
            nbytes = self.sizes.get(k, 0)
            self.in_flight -= nbytes
            if self.fetched_refs.get(k):
                self.fetched[k] = v
                self.fetched_bytes += nbytes
            else:
                self.sizes.pop(k, None)
            for tid in self.needed_by.pop(k, ()):
                miss = self.missing_of.get(tid)
                if miss is None:
                    continue
                miss.discard(k)
                if not miss:
                    del self.missing_of[tid]
                    ready.append(self.waiting.pop(tid))
        for k in missing:
            self.fetching.pop(k, None)
            self.in_flight -= self.sizes.pop(k, 0)
            for tid in self.needed_by.pop(k, ()):
                if self.missing_of.pop(tid, None) is not None:
                    task = self.waiting.pop(tid)
                    self._unref(task)
                    report.append((tid, [k]))
        return ready, report

    def peer_lost(self, address: str) -> list[tuple[int, list[str]]]:
        """Every fetch from ``address`` failed."""
        keys = [k for k, a in self.fetching.items() if a == address]
        return self.got({}, keys, address)[1]

    def _unref(self, task: Task) -> None:
        deps = task[4]
        if not deps:
            return
        refs = self.fetched_refs
        for k in deps:
            n = refs.get(k)
            if n is None:
                continue
            if n <= 1:
                del refs[k]
                if self.fetched.pop(k, None) is not None:
                    self.fetched_bytes -= self.sizes.pop(k, 0)
            else:
                refs[k] = n - 1

    def done(self, task: Task) -> None:
        """``task`` ran (or was dropped): it no longer holds its fetched inputs."""
        self.cancelled.discard(task[0])
        self._unref(task)

    def cancel(self, tids: list[int]) -> list[int]:
        """Drop tasks. Returns the tids dropped here; the rest are skipped by the executor."""
        dropped = []
        for tid in tids:
            task = self.waiting.pop(tid, None)
            if task is not None:
                for k in self.missing_of.pop(tid, ()):
                    s = self.needed_by.get(k)
                    if s is not None:
                        s.discard(tid)
                self._unref(task)
                dropped.append(tid)
            else:
                self.cancelled.add(tid)
        return dropped
