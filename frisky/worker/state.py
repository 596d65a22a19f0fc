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
                if k not in self.fetching:
                    addr = where.get(k)
                    if addr is None:
                        continue
                    self.fetching[k] = addr
                    fetch.setdefault(addr, []).append(k)
        return ready, fetch

    def got(self, values: dict[str, Any], missing: list[str], address: str) -> tuple[list[Task], list[tuple[int, list[str]]]]:
        """A peer answered. Returns (tasks now ready, [(tid, keys it lacks)] to report)."""
        ready: list[Task] = []
        report: list[tuple[int, list[str]]] = []
        for k, v in values.items():
            self.fetching.pop(k, None)
            if self.fetched_refs.get(k):
                self.fetched[k] = v
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
                self.fetched.pop(k, None)
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
