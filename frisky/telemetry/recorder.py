"""A bounded ring of spans and a dict of counters, one per process."""

from __future__ import annotations

import collections
import time
from typing import Any

from frisky import config

now = time.perf_counter_ns


class Recorder:
    """Holds the last ``maxlen`` spans and running totals per span name and counter.

    A span is ``(name, start_ns, stop_ns, prefix, nbytes)`` in ``perf_counter_ns`` time;
    :class:`~frisky.telemetry.ship.Shipper` turns the ring into per-second buckets when a
    heartbeat leaves, so recording stays an append and a running total.
    """

    def __init__(self, maxlen: int | None = None) -> None:
        self.spans: collections.deque = collections.deque(maxlen=maxlen or config.get("telemetry_spans"))
        self.totals: dict[str, list] = {}  # name -> [count, total_ns]
        self.added: dict[str, list] = {}  # name -> [count, total_ns] of add()s (no raw spans)
        self.counters: dict[str, float] = {}
        self.source = ""  # worker name / "scheduler" / "client", set by the owning process

    def span(self, name: str, start_ns: int, prefix: str = "", stop_ns: int | None = None, nbytes: int = 0) -> None:
        """Record ``name`` from ``start_ns`` until ``stop_ns`` (default: now), moving ``nbytes``."""
        stop = now() if stop_ns is None else stop_ns
        self.spans.append((name, start_ns, stop, prefix, nbytes))
        tot = self.totals.get(name)
        if tot is None:
            self.totals[name] = [1, stop - start_ns]
        else:
            tot[0] += 1
            tot[1] += stop - start_ns

    def add(self, name: str, count: int, total_ns: int) -> None:
        """Add ``count`` spans of ``name`` taking ``total_ns`` together, keeping no raw spans
        (for steps too small and frequent to record one by one)."""
        for d in (self.totals, self.added):
            tot = d.get(name)
            if tot is None:
                d[name] = [count, total_ns]
            else:
                tot[0] += count
                tot[1] += total_ns

    def count(self, name: str, value: float = 1) -> None:
        """Add ``value`` to counter ``name``."""
        self.counters[name] = self.counters.get(name, 0) + value

    def snapshot(self, max_spans: int = 200) -> dict[str, Any]:
        """Totals, counters and the most recent raw spans, as plain JSON-able data."""
        spans = list(self.spans)[-max_spans:]
        return {
            "source": self.source,
            "totals": {k: list(v) for k, v in self.totals.items()},
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
    for name in ("span", "add", "count"):
        if on:
            recorder.__dict__.pop(name, None)
        else:
            setattr(recorder, name, _off)
