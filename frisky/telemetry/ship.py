"""What a process ships with its heartbeat: its spans since the last one, as per-second
buckets per span name, plus a bounded sample of the raw spans.

Recording stays a pack into the ring (:mod:`.recorder`); the work of bucketing is done
here, once per heartbeat, over the spans recorded since the last one (the recorder counts
them); if the ring wrapped meanwhile, the wrap is counted as ``lost``.
"""

from __future__ import annotations

import time

from frisky.telemetry.recorder import Recorder

MAX_SAMPLE = 200  # raw spans per heartbeat
EXEC = "worker.exec.call"
EXEC_ERROR = "worker.exec.error"


class Shipper:
    """Turns one :class:`Recorder`'s ring into buckets of the seconds since the last call."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.mark = max(0, rec.recorded() - rec.maxlen)  # spans recorded before the last call
        self.added: dict[str, tuple] = {}  # rec.added as it was at the last call
        self.lost = 0  # spans that left the ring before they were shipped

    def collect(self, max_sample: int = MAX_SAMPLE) -> dict:
        """``{"buckets": [[second, {name: [count, seconds, bytes]}], ...], "prefixes": [[second,
        {prefix: [done, seconds, bytes, errors]}], ...] (from ``worker.exec.*``), "spans": [[name,
        start, stop, prefix, nbytes], ...] (wall-clock seconds), "spans_total": n, "lost": n}``."""
        wall = time.time()
        offset = wall - time.perf_counter_ns() / 1e9
        new, self.mark, wrapped = self.rec.since(self.mark)
        if wrapped:
            self.lost += 1
        buckets: dict[int, dict] = {}
        prefixes: dict[int, dict] = {}
        for name, t0, t1, prefix, nb in new:
            sec = int(t1 / 1e9 + offset)
            b = buckets.get(sec)
            if b is None:
                b = buckets[sec] = {}
            e = b.get(name)
            dt = (t1 - t0) / 1e9
            if e is None:
                b[name] = [1, dt, nb]
            else:
                e[0] += 1
                e[1] += dt
                e[2] += nb
            if name == EXEC or name == EXEC_ERROR:
                p = prefixes.get(sec)
                if p is None:
                    p = prefixes[sec] = {}
                e = p.get(prefix)
                if e is None:
                    e = p[prefix] = [0, 0.0, 0, 0]
                if name == EXEC:
                    e[0] += 1
                    e[1] += dt
                    e[2] += nb
                else:
                    e[3] += 1
        # spans added in bulk (no raw spans): what came since the last call, in this second
        now_sec = int(wall)
        total = len(new)
        added = self.rec.added
        for name, tot in list(added.items()):
            c, ns = tot[0], tot[1]
            c0, ns0 = self.added.get(name, (0, 0))
            if c > c0:
                b = buckets.setdefault(now_sec, {})
                e = b.get(name)
                if e is None:
                    b[name] = [c - c0, (ns - ns0) / 1e9, 0]
                else:
                    e[0] += c - c0
                    e[1] += (ns - ns0) / 1e9
                self.added[name] = (c, ns)
                total += c - c0
        sample = new[-max_sample:]
        return {
            "buckets": [[s, b] for s, b in sorted(buckets.items())],
            "prefixes": [[s, p] for s, p in sorted(prefixes.items())],
            "spans": [[n, t0 / 1e9 + offset, t1 / 1e9 + offset, p, nb] for n, t0, t1, p, nb in sample],
            "spans_total": total,
            "lost": self.lost,
        }
