"""A bounded ring of spans and running totals per span name, task prefix and counter, one
per process.

The ring holds no Python object per span: each span is 32 bytes packed into one
``bytearray`` (name and key prefix as small interned ids, start, stop, bytes). The totals
are what a heartbeat ships (as differences): a task call adds to a few array slots and one
prefix entry, and nothing walks the ring per span later. A ring of
tuples kept up to ``telemetry_spans`` of them alive, made while everything else was being
made, and after a large graph was released those few scattered survivors pinned the
allocator's arenas: the scheduler stayed hundreds of MiB above where it started.
"""

from __future__ import annotations

import struct
import time
from array import array
from typing import Any

from frisky import config

now = time.perf_counter_ns

_SLOT = struct.Struct("=IIqqq")  # name id, prefix id, start_ns, stop_ns, nbytes
SLOT = _SLOT.size
FIRST_SLOTS = 256  # the ring starts this small and doubles up to its length
MAX_NAMES = 1024  # span names are fixed strings in the code; more than this are "other"
MAX_PREFIXES = 4096  # distinct key prefixes named at once; past it the oldest half is forgotten
OTHER = "other"
EXEC = "worker.exec.call"
EXEC_ERROR = "worker.exec.error"
_EXEC_ID, _EXEC_ERROR_ID = 1, 2  # interned first: span() tells them apart by id


class Recorder:
    """Holds the last ``maxlen`` spans and running totals per span name and counter.

    A span is ``(name, start_ns, stop_ns, prefix, nbytes)`` in ``perf_counter_ns`` time;
    recording packs it into the ring and adds it to the running totals of its name (and,
    for task calls and errors, of its key prefix). :class:`~frisky.telemetry.ship.Shipper`
    ships the totals' growth since its last heartbeat and a sample of the ring.

    Threads may record at once without a lock: a span is written before the ring's
    position moves, so a reader sees whole spans; two threads racing for one slot lose
    one span (and may mix their fields: readers clamp ``stop`` to ``start``).
    """

    def __init__(self, maxlen: int | None = None) -> None:
        self.maxlen = max(1, maxlen or config.get("telemetry_spans"))
        self._buf = bytearray(SLOT * min(FIRST_SLOTS, self.maxlen))
        self._end = len(self._buf)
        self._pos = 0  # byte offset of the next slot
        self._wraps = 0  # times the full ring wrapped
        self._name_id: dict[str, int] = {OTHER: 0, EXEC: _EXEC_ID, EXEC_ERROR: _EXEC_ERROR_ID}
        self._names: list[str] = [OTHER, EXEC, EXEC_ERROR]
        self._prefix_id: dict[str, int] = {"": 0}
        self._prefixes: dict[int, str] = {0: ""}
        self._next_prefix = 1
        # per name id: spans recorded or added, their nanoseconds and bytes
        self._count = array("q", bytes(8 * MAX_NAMES))
        self._ns = array("q", bytes(8 * MAX_NAMES))
        self._nbytes = array("q", bytes(8 * MAX_NAMES))
        # per task prefix: [calls, call ns, result bytes, errors] (at most MAX_PREFIXES, then "other")
        self.by_prefix: dict[str, list] = {}
        self.counters: dict[str, float] = {}
        self.source = ""  # worker name / "scheduler" / "client", set by the owning process
        self._pack = _SLOT.pack_into

    def span(self, name: str, start_ns: int, prefix: str = "", stop_ns: int | None = None, nbytes: int = 0) -> None:
        """Record ``name`` from ``start_ns`` until ``stop_ns`` (default: now), moving ``nbytes``."""
        stop = now() if stop_ns is None else stop_ns
        a = self._name_id.get(name)
        if a is None:
            a = self._intern_name(name)
        if a == _EXEC_ID:
            return self.call(prefix, start_ns, stop, nbytes)
        b = self._prefix_id.get(prefix)
        if b is None:
            b = self._intern_prefix(prefix)
        i = self._pos
        self._pack(self._buf, i, a, b, start_ns, stop, nbytes)
        i += SLOT
        self._pos = i if i < self._end else self._wrap()
        self._count[a] += 1
        self._ns[a] += stop - start_ns
        self._nbytes[a] += nbytes
        if a == _EXEC_ERROR_ID:
            e = self.by_prefix.get(prefix)
            if e is None:
                e = self._prefix_entry(prefix)
            e[3] += 1

    def call(self, prefix: str, start_ns: int, stop_ns: int, nbytes: int) -> None:
        """Record one task call (a ``worker.exec.call`` span) of key prefix ``prefix``.

        The worker's per-task path: the span's name totals are its prefixes' totals (summed
        when read), so a call updates one prefix entry and the ring, nothing else. The ring
        write is the same as in :meth:`span`, inlined in both: a shared helper is one more
        Python call per task."""
        b = self._prefix_id.get(prefix)
        if b is None:
            b = self._intern_prefix(prefix)
        i = self._pos
        self._pack(self._buf, i, _EXEC_ID, b, start_ns, stop_ns, nbytes)
        i += SLOT
        self._pos = i if i < self._end else self._wrap()
        e = self.by_prefix.get(prefix)
        if e is None:
            e = self._prefix_entry(prefix)
        e[0] += 1
        e[1] += stop_ns - start_ns
        e[2] += nbytes

    def add(self, name: str, count: int, total_ns: int) -> None:
        """Add ``count`` spans of ``name`` taking ``total_ns`` together, keeping no raw spans
        (for steps too small and frequent to record one by one)."""
        a = self._name_id.get(name)
        if a is None:
            a = self._intern_name(name)
        self._count[a] += count
        self._ns[a] += total_ns

    def count(self, name: str, value: float = 1) -> None:
        """Add ``value`` to counter ``name``."""
        self.counters[name] = self.counters.get(name, 0) + value

    # ------------------------------------------------------------ rare paths of span()
    def _prefix_entry(self, prefix: str) -> list:
        by = self.by_prefix
        if len(by) >= MAX_PREFIXES:
            prefix = OTHER
        e = by.get(prefix)
        if e is None:
            e = by[prefix] = [0, 0, 0, 0]
        return e

    def _intern_name(self, name: str) -> int:
        if len(self._names) >= MAX_NAMES:
            return 0
        i = self._name_id[name] = len(self._names)
        self._names.append(name)
        return i

    def _intern_prefix(self, prefix: str) -> int:
        ids, strs = self._prefix_id, self._prefixes
        if len(ids) >= MAX_PREFIXES:
            # forget the older half (ids are never reused: spans still naming one read as "other")
            for p in list(ids)[1:MAX_PREFIXES // 2]:
                del strs[ids.pop(p)]
        i = self._next_prefix
        if i >= 1 << 32:  # four billion distinct prefixes: start counting again
            ids.clear()
            strs.clear()
            ids[""], strs[0] = 0, ""
            i = 1
        self._next_prefix = i + 1
        ids[prefix] = i
        strs[i] = prefix
        return i

    def _wrap(self) -> int:
        """The ring is full: double it (up to ``maxlen`` spans), else start over at slot 0."""
        size = len(self._buf) // SLOT
        if size < self.maxlen:
            self._buf.extend(bytes(SLOT * (min(2 * size, self.maxlen) - size)))
            self._end = len(self._buf)
            return size * SLOT
        self._wraps += 1
        return 0

    # ------------------------------------------------------------ reading
    def recorded(self) -> int:
        """Spans recorded so far (including those the ring no longer holds)."""
        while True:
            wraps, pos = self._wraps, self._pos
            if wraps == self._wraps:  # no wrap in between (another thread records meanwhile)
                return wraps * self.maxlen + pos // SLOT

    def held(self) -> int:
        """Spans the ring can hold now (it grows up to ``maxlen``)."""
        return len(self._buf) // SLOT

    def since(self, mark: int) -> tuple[list[tuple], int, bool]:
        """The spans recorded after the first ``mark`` (oldest first) as ``(name, start_ns,
        stop_ns, prefix, nbytes)`` tuples, the new mark, and whether some had left the ring."""
        end = self.recorded()
        buf = self._buf
        size = len(buf) // SLOT
        n = end - mark
        lost = n > size
        n = min(max(n, 0), size)
        first = (end - n) % size
        last = first + n
        # slices are copies: a thread recording meanwhile changes none of them
        raw = buf[first * SLOT:last * SLOT] if last <= size else buf[first * SLOT:] + buf[:(last - size) * SLOT]
        names, prefixes = self._names, self._prefixes
        out = [(names[a] if a < len(names) else OTHER, t0, t1 if t1 >= t0 else t0, prefixes.get(b, OTHER), nb)
               for a, b, t0, t1, nb in _SLOT.iter_unpack(raw)]
        return out, end, lost

    @property
    def spans(self) -> list[tuple]:
        """The spans the ring holds, oldest first (see :meth:`since`)."""
        return self.since(0)[0]

    @property
    def totals(self) -> dict[str, list]:
        """``{name: [count, total_ns]}`` of every span recorded or added so far."""
        names, count, ns, _ = self.columns()
        return self._sum(names, count, ns)

    def columns(self) -> tuple[list[str], array, array, array]:
        """The names by id and copies of their running span counts, nanoseconds and bytes."""
        count, ns, nbytes = array("q", self._count), array("q", self._ns), array("q", self._nbytes)
        count[_EXEC_ID], ns[_EXEC_ID], nbytes[_EXEC_ID] = self._calls()
        return list(self._names), count, ns, nbytes

    def _calls(self) -> tuple[int, int, int]:
        c = ns = nb = 0
        for e in list(self.by_prefix.values()):
            c += e[0]
            ns += e[1]
            nb += e[2]
        return c, ns, nb

    @staticmethod
    def _sum(names: list[str], c: array, ns: array) -> dict[str, list]:
        out: dict[str, list] = {}
        for i, name in enumerate(names):  # a name two threads interned at once has two ids
            if c[i]:
                t = out.setdefault(name, [0, 0])
                t[0] += c[i]
                t[1] += ns[i]
        return out

    def snapshot(self, max_spans: int = 200) -> dict[str, Any]:
        """Totals, counters and the most recent raw spans, as plain JSON-able data."""
        spans = self.since(max(0, self.recorded() - max_spans))[0]
        return {
            "source": self.source,
            "totals": self.totals,
            "counters": dict(self.counters),
            "spans": [list(s) for s in spans],
        }


recorder = Recorder()
span = recorder.span
count = recorder.count


def _off(*args, **kwargs) -> None:
    """Recording switched off (``telemetry=False``, for the overhead benchmark only)."""


def enable(on: bool) -> None:
    """Switch this process's recording on or off (callers that bound ``recorder.span``
    before keep what they bound: only the off switch of the overhead benchmark uses this,
    before the process's work starts)."""
    for name in ("span", "call", "add", "count"):
        if on:
            recorder.__dict__.pop(name, None)
        else:
            setattr(recorder, name, _off)
