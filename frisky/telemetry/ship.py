"""What a process ships with its heartbeat: the growth of its span totals since the last
one, as this second's bucket per span name and per task prefix, plus a bounded sample of
the raw spans.

Recording adds to running totals (:mod:`.recorder`); shipping is the difference from the
totals at the last call, so its cost does not grow with the spans recorded in between
(a worker running 100k tasks a second walked 100k spans at each heartbeat before). If the
ring wrapped meanwhile, only the sample misses spans: the wrap is counted as ``lost``.
"""

from __future__ import annotations

import time
from array import array

from frisky.telemetry import payload
from frisky.telemetry.recorder import MAX_NAMES, OTHER, Recorder

MAX_SAMPLE = 200  # raw spans per heartbeat


class Shipper:
    """Turns one :class:`Recorder`'s totals into a bucket of the time since the last call."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.mark = max(0, rec.recorded() - rec.maxlen)  # spans recorded before the last call
        zeros = bytes(8 * MAX_NAMES)
        # the recorder's totals as they were at the last call
        self.count, self.ns, self.nbytes = array("q", zeros), array("q", zeros), array("q", zeros)
        self.by_prefix: dict[str, tuple] = {}
        self.lost = 0  # heartbeats whose spans had partly left the ring before they were sampled

    def collect(self, max_sample: int = MAX_SAMPLE) -> dict:
        """``{"buckets": [[second, {name: [count, seconds, bytes]}]], "prefixes": [[second,
        {prefix: [done, seconds, bytes, errors]}]] (from ``worker.exec.*``), "spans": [[name,
        start, stop, prefix, nbytes], ...] (wall-clock seconds, the newest ``max_sample``),
        "spans_total": n, "lost": n}``; everything since the last call, in this second."""
        wall = time.time()
        offset = wall - time.perf_counter_ns() / 1e9
        rec = self.rec
        end = rec.recorded()
        if end - self.mark > rec.held():
            self.lost += 1
        sample = rec.since(max(self.mark, end - max_sample))[0] if max_sample > 0 else []
        self.mark = end
        sec = int(wall)
        names, count, ns, nbytes = rec.columns()
        c0, ns0, nb0 = self.count, self.ns, self.nbytes
        bucket: dict[str, list] = {}
        total = 0
        for i, name in enumerate(names):
            dc = count[i] - c0[i]
            if dc <= 0:
                continue
            total += dc
            # summed: a name two threads interned at once has two ids
            _fold(bucket, name, (dc, (ns[i] - ns0[i]) / 1e9, nbytes[i] - nb0[i]))
        self.count, self.ns, self.nbytes = count, ns, nbytes
        grown: dict[str, list] = {}
        last = self.by_prefix
        for prefix, e in list(rec.by_prefix.items()):
            now = (e[0], e[1], e[2], e[3])
            before = last.get(prefix)
            if before != now:
                b = before or (0, 0, 0, 0)
                _fold(grown, prefix[:payload.MAX_STR], (now[0] - b[0], (now[1] - b[1]) / 1e9, now[2] - b[2],
                                                       now[3] - b[3]))
                last[prefix] = now
        if len(grown) > payload.MAX_NAMES:  # the busiest keep their names, the rest are "other"
            busiest = sorted(grown, key=lambda p: grown[p][0] + grown[p][3], reverse=True)
            folded: dict[str, list] = {}
            for i, p in enumerate(busiest):
                _fold(folded, p if i < payload.MAX_NAMES - 1 else OTHER, grown[p])
            grown = folded
        return {
            "buckets": [[sec, bucket]] if bucket else [],
            "prefixes": [[sec, grown]] if grown else [],
            "spans": [[n, t0 / 1e9 + offset, t1 / 1e9 + offset, p[:payload.MAX_STR], nb]
                      for n, t0, t1, p, nb in sample],
            "spans_total": total,
            "lost": self.lost,
        }


def _fold(into: dict[str, list], name: str, v: tuple | list) -> None:
    """Add the numbers ``v`` (a bucket's or a prefix's) to ``into[name]``, field by field."""
    e = into.get(name)
    if e is None:
        into[name] = list(v)
    else:
        for i, x in enumerate(v):
            e[i] += x
