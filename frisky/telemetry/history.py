"""The scheduler's telemetry history: bounded, at one-second resolution.

Fed on the scheduler's loop thread (:meth:`History.ingest`, one worker heartbeat's checked
payload at a time), read by the dashboard's HTTP thread (the query methods); one lock
guards both, held for a payload or a query, never for I/O.

What it keeps, and its fixed memory budget (README, "Observability API"):

- per-second rows for the last :data:`SECONDS` seconds of every span name — ``[count,
  seconds, bytes]`` — cluster-wide and per worker (at most :data:`MAX_NAMES_PER_WORKER`
  names each; more fold into ``"other"``), as flat ``array('d')`` rings;
- per worker, per-second gauges (memory parts, network and disk rates, CPU) and the last
  payload's memory, executing tasks and transfers in flight;
- per key prefix, tasks done, compute seconds, bytes produced and errors (at most
  :data:`MAX_PREFIXES`) and a per-second series of the busiest :data:`MAX_PREFIX_SERIES`;
- a ring of the last :data:`SPAN_RING` raw spans (sampled by the workers, at most 200 per
  heartbeat) as parallel arrays, and the last :data:`TRANSFER_RING` finished transfers.

Workers that left keep their rows until they age out; at most :data:`MAX_WORKERS` workers
are kept (the longest gone go first), so the budget holds under churn too.
"""

from __future__ import annotations

import collections
import threading
from array import array

SECONDS = 660  # >= 10 minutes of closed seconds, with slack for late heartbeats
SPAN_RING = 200_000
FIRST_SPANS = 4096  # the span ring's first size; it doubles up to SPAN_RING
TRANSFER_RING = 2000
MAX_NAMES = 1024  # distinct span names kept (more are "other")
MAX_NAMES_PER_WORKER = 48
MAX_WORKERS = 256
MAX_PREFIXES = 2000
MAX_PREFIX_SERIES = 64
MAX_INTERNED = 20_000  # distinct prefixes / workers the span ring can name
# what the history may hold for a 64-worker cluster with 16 span names each, 10 minutes on, its
# span ring full (the test drives it; README states it): the rings are fixed-size arrays, so
# the budget grows with workers (30 KiB each) and their span names (8 KiB each), not with tasks or time
BUDGET_64_WORKERS = 24 << 20
GAUGES = ("managed", "unmanaged", "spilled", "in_transit", "recv_pool", "rss", "recv_rate", "sent_rate",
          "read_rate", "write_rate", "cpu")
OTHER = "other"


def _ring(width: int, code: str = "d") -> array:
    """A ring of ``SECONDS`` rows of ``width`` numbers: float64 cluster-wide, float32 per worker
    (7 digits are plenty for a chart, and there are 64 times as many)."""
    return array(code, bytes(array(code).itemsize * width * SECONDS))


class _Interner:
    """str -> small int, bounded: past ``cap`` distinct strings every new one is ``OTHER``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.index: dict[str, int] = {OTHER: 0}
        self.names: list[str] = [OTHER]

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            if len(self.names) >= self.cap:
                return 0
            i = self.index[s] = len(self.names)
            self.names.append(s)
        return i


class WorkerHistory:
    """One worker's rows and its latest state."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.series: dict[str, array] = {}  # span name -> ring of [count, seconds, bytes]
        self.rings: dict[str, tuple] = {}  # span name as shipped -> (cluster ring, own ring)
        self.gauges = {g: _ring(1, "f") for g in GAUGES}
        self.last: dict = {}  # the last payload's memory, network, disk, executing, in_flight, ...
        self.prev: dict | None = None  # totals of the payload before, for rates
        self.last_seen = 0.0
        self.gone: float | None = None  # when it left
        self.spans_total = 0


class History:
    """Bounded per-second history of a cluster's telemetry (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latest: int | None = None  # newest second the rings hold
        self.slot_sec = array("q", [-1] * SECONDS)  # the second each slot holds now
        self.names = _Interner(MAX_NAMES)
        self.cluster: dict[str, array] = {}  # span name -> ring of [count, seconds, bytes]
        self._local_rings: dict[str, tuple] = {}  # (the scheduler's own spans: cluster rings only)
        self.workers: dict[str, WorkerHistory] = {}
        self.prefix_totals: dict[str, list] = {}  # prefix -> [done, seconds, bytes, errors, last second]
        self.prefix_series: dict[str, array] = {}  # prefix -> ring of [done, seconds, bytes]
        self.sched = _ring(2)  # per second: tasks finished, tasks erred (the scheduler's counts)
        self._sched_prev: tuple | None = None
        self.prefixes = _Interner(MAX_INTERNED)
        self.sources = _Interner(MAX_INTERNED)
        # the span ring's columns, grown as spans come (see _spans)
        self.s_name = array("H")
        self.s_source = array("H")
        self.s_prefix = array("H")
        self.s_start = array("d")
        self.s_stop = array("d")
        self.s_bytes = array("d")
        self.s_next = 0  # next slot to write
        self.s_count = 0  # spans held (<= SPAN_RING)
        self.transfers: collections.deque = collections.deque(maxlen=TRANSFER_RING)
        self.transfer_totals = [0, 0.0, 0.0]  # count, bytes, seconds
        self.spans_total = 0
        self.started: float | None = None
        self.peak_memory = 0  # the most the live workers' memory (managed + unmanaged) summed to

    # ------------------------------------------------------------ time
    def _advance(self, sec: int) -> None:
        """Make ``sec`` the newest second: clear the slots of the seconds it passes."""
        latest = self.latest
        if latest is not None and sec <= latest:
            return
        first = sec - SECONDS + 1 if latest is None else max(latest + 1, sec - SECONDS + 1)
        rings = [*self.cluster.values(), *self.prefix_series.values(), self.sched]
        for wh in self.workers.values():
            rings.extend(wh.series.values())
            rings.extend(wh.gauges.values())
        for s in range(first, sec + 1):
            slot = s % SECONDS
            self.slot_sec[slot] = s
            for r in rings:
                w = len(r) // SECONDS
                r[slot * w:(slot + 1) * w] = _ZEROS[w, r.typecode]
        self.latest = sec

    def _slot(self, sec: int, now_sec: int) -> int | None:
        """The slot for a worker's second: clamped to now (clock skew), None if too old."""
        if sec > now_sec:
            sec = now_sec
        if sec <= now_sec - SECONDS:
            return None
        return sec % SECONDS

    def tick(self, now: float, finished: int = 0, erred: int = 0) -> None:
        """The scheduler's second: advance the rings; record its finished / erred counts."""
        with self.lock:
            if self.started is None:
                self.started = now
            sec = int(now)
            self._advance(sec)
            used = 0
            for wh in self.workers.values():
                mem = wh.last.get("memory") if wh.gone is None else None
                if mem:
                    used += mem["managed"] + mem["unmanaged"]
            self.peak_memory = max(self.peak_memory, int(used))
            prev = self._sched_prev
            self._sched_prev = (finished, erred)
            if prev is not None:
                slot = sec % SECONDS
                self.sched[2 * slot] += max(0, finished - prev[0])
                self.sched[2 * slot + 1] += max(0, erred - prev[1])

    # ------------------------------------------------------------ ingest
    def ingest(self, worker: str, address: str, t: dict, now: float) -> None:
        """Keep one worker's checked telemetry payload (:func:`frisky.telemetry.payload.parse`)."""
        with self.lock:
            if self.started is None:
                self.started = now
            now_sec = int(now)
            self._advance(now_sec)
            wh = self.workers.get(worker)
            if wh is None or wh.gone is not None:
                wh = self._new_worker(worker, address)
            self._buckets(t["buckets"], now_sec, wh)
            self._prefixes(t["prefixes"], now_sec)
            self._spans(t["spans"], self.sources(worker))
            self._gauges(wh, t, now_sec)
            for key, src, nkeys, nbytes, seconds in t["transfers"]:
                self.transfers.append((key, src, address, nkeys, nbytes, seconds, t["time"]))
                tt = self.transfer_totals
                tt[0] += 1
                tt[1] += nbytes
                tt[2] += seconds
            wh.spans_total += t["spans_total"]
            self.spans_total += t["spans_total"]
            wh.last_seen = now

    def ingest_local(self, source: str, collected: dict, now: float) -> None:
        """Keep the spans of this process (the scheduler's own), from a ``Shipper``."""
        with self.lock:
            now_sec = int(now)
            self._advance(now_sec)
            self._buckets(collected["buckets"], now_sec, None)
            self._spans(collected["spans"], self.sources(source))
            self.spans_total += collected["spans_total"]

    def _new_worker(self, worker: str, address: str) -> WorkerHistory:
        if worker not in self.workers and len(self.workers) >= MAX_WORKERS:
            gone = [w for w in self.workers.values() if w.gone is not None]
            victim = min(gone or self.workers.values(), key=lambda w: w.gone or w.last_seen)
            del self.workers[victim.name]
        wh = self.workers[worker] = WorkerHistory(worker, address)
        return wh

    def worker_gone(self, worker: str, now: float) -> None:
        with self.lock:
            wh = self.workers.get(worker)
            if wh is not None and wh.gone is None:
                wh.gone = now
            for name in [w.name for w in self.workers.values() if w.gone is not None and now - w.gone > SECONDS]:
                del self.workers[name]

    def _buckets(self, buckets: list, now_sec: int, wh: WorkerHistory | None) -> None:
        rings = wh.rings if wh is not None else self._local_rings
        for sec, entries in buckets:
            slot = self._slot(sec, now_sec)
            if slot is None:
                continue
            i = 3 * slot
            j, k = i + 1, i + 2
            for name, v in entries.items():
                pair = rings.get(name)
                if pair is None:
                    pair = self._rings_for(name, wh, rings)
                c, s, nb = v
                for r in pair:
                    r[i] += c
                    r[j] += s
                    r[k] += nb

    def _rings_for(self, name: str, wh: WorkerHistory | None, cache: dict) -> tuple:
        """The rings a span name's bucket adds to: the cluster's, and the worker's (cached per worker)."""
        names = self.names
        kept = names.names[names(name)]
        r = self.cluster.get(kept)
        if r is None:
            r = self.cluster[kept] = _ring(3)
        pair: tuple = (r,)
        if wh is not None:
            if kept not in wh.series and len(wh.series) >= MAX_NAMES_PER_WORKER:
                kept = OTHER
            w = wh.series.get(kept)
            if w is None:
                w = wh.series[kept] = _ring(3, "f")
            pair = (r, w)
        if len(cache) < 4 * MAX_NAMES:
            cache[name] = pair
        return pair

    def _prefixes(self, buckets: list, now_sec: int) -> None:
        totals = self.prefix_totals
        series = self.prefix_series
        for sec, entries in buckets:
            slot = self._slot(sec, now_sec)
            for prefix, (done, s, nb, errors) in entries.items():
                prefix = clean_prefix(prefix)
                tot = totals.get(prefix)
                if tot is None:
                    if len(totals) >= MAX_PREFIXES:  # the longest idle one goes
                        del totals[min(totals, key=lambda p: totals[p][4])]
                    tot = totals[prefix] = [0, 0.0, 0, 0, now_sec]
                tot[0] += done
                tot[1] += s
                tot[2] += nb
                tot[3] += errors
                tot[4] = now_sec
                if slot is None:
                    continue
                r = series.get(prefix)
                if r is None:
                    if len(series) >= MAX_PREFIX_SERIES:
                        idle = min(series, key=lambda p: totals[p][4] if p in totals else -1)
                        if idle in totals and totals[idle][4] >= now_sec - 5:
                            continue  # every series is busy: this prefix gets totals only
                        del series[idle]
                    r = series[prefix] = _ring(3)
                i = 3 * slot
                r[i] += done
                r[i + 1] += s
                r[i + 2] += nb

    def _spans(self, spans: list, source: int) -> None:
        n = len(self.s_name)
        if n < SPAN_RING and self.s_next + len(spans) >= n:
            # the ring doubles until it is whole, and wraps only then: a cluster that runs
            # a few seconds touches a few pages, not 6 MB (zeroing that took 3-5 ms of start)
            grow = min(SPAN_RING, max(FIRST_SPANS, 2 * n, self.s_next + len(spans) + 1)) - n
            for col in (self.s_name, self.s_source, self.s_prefix):
                col.extend(array("H", [0]) * grow)
            for col in (self.s_start, self.s_stop, self.s_bytes):
                col.extend(array("d", [0.0]) * grow)
            n += grow
        i = self.s_next
        names, prefixes = self.names, self.prefixes
        for name, start, stop, prefix, nb in spans:
            self.s_name[i] = names(name)
            self.s_source[i] = source
            self.s_prefix[i] = prefixes(clean_prefix(prefix))
            self.s_start[i] = start
            self.s_stop[i] = stop
            self.s_bytes[i] = nb
            i += 1
            if i == n:
                i = 0
        self.s_count = min(n, self.s_count + len(spans))
        self.s_next = i

    def _gauges(self, wh: WorkerHistory, t: dict, now_sec: int) -> None:
        slot = now_sec % SECONDS
        mem = t["memory"]
        g = wh.gauges
        for k in ("managed", "unmanaged", "spilled", "in_transit", "recv_pool", "rss"):
            g[k][slot] = mem[k]
        totals = (t["network"]["recv_bytes"], t["network"]["sent_bytes"], t["disk"]["read_bytes"],
                  t["disk"]["written_bytes"], t["cpu_seconds"], t["time"])
        prev = wh.prev
        if prev is not None and totals[5] > prev[5]:
            dt = totals[5] - prev[5]
            for k, a, b in zip(("recv_rate", "sent_rate", "read_rate", "write_rate", "cpu"), totals, prev):
                g[k][slot] = max(0.0, a - b) / dt
        wh.prev = totals
        wh.last = {
            "memory": mem, "network": t["network"], "disk": t["disk"], "cpu_seconds": t["cpu_seconds"],
            "executing": t["executing"], "in_flight": t["in_flight"], "time": t["time"],
        }

    # ------------------------------------------------------------ queries
    def window(self, since: float) -> tuple[int, list[int]]:
        """(first second, slots in order) of the last ``since`` seconds held."""
        if self.latest is None:
            return 0, []
        n = max(1, min(int(since), SECONDS))
        t0 = self.latest - n + 1
        return t0, [s % SECONDS for s in range(t0, self.latest + 1)]

    def _col(self, r: array, slots: list[int], col: int, t0: int) -> list[float]:
        w = len(r) // SECONDS
        slot_sec = self.slot_sec
        return [r[s * w + col] if slot_sec[s] == t0 + i else 0.0 for i, s in enumerate(slots)]

    def span_series(self, since: float, worker: str | None = None, col: int = 1) -> tuple[int, dict]:
        """``(t0, {span name: [per-second value]})``: seconds (col 1), counts (0) or bytes (2)."""
        with self.lock:
            t0, slots = self.window(since)
            if worker is None:
                src = self.cluster
            else:
                wh = self.workers.get(worker)
                src = wh.series if wh is not None else {}
            return t0, {name: self._col(r, slots, col, t0) for name, r in src.items()}

    def prefix_series_of(self, prefix: str, since: float) -> tuple[int, list[float] | None]:
        with self.lock:
            t0, slots = self.window(since)
            r = self.prefix_series.get(prefix)
            return t0, None if r is None else self._col(r, slots, 1, t0)

    def gauge_series(self, since: float, gauge: str) -> tuple[int, dict]:
        """``(t0, {worker: [per-second value]})`` of one gauge (see :data:`GAUGES`)."""
        with self.lock:
            t0, slots = self.window(since)
            return t0, {w.name: self._col(w.gauges[gauge], slots, 0, t0)
                        for w in self.workers.values() if w.gone is None}

    def sched_series(self, since: float) -> tuple[int, list, list]:
        with self.lock:
            t0, slots = self.window(since)
            return t0, self._col(self.sched, slots, 0, t0), self._col(self.sched, slots, 1, t0)

    def totals_by_worker(self, since: float) -> dict[str, dict[str, list]]:
        """``{worker: {span name: [calls, seconds]}}`` over the last ``since`` seconds."""
        with self.lock:
            t0, slots = self.window(since)
            out = {}
            slot_sec = self.slot_sec
            live = [s for i, s in enumerate(slots) if slot_sec[s] == t0 + i]
            for wh in self.workers.values():
                if wh.gone is not None:
                    continue
                d = {}
                for name, r in wh.series.items():
                    c = sum(r[3 * s] for s in live)
                    if c:
                        d[name] = [c, sum(r[3 * s + 1] for s in live), sum(r[3 * s + 2] for s in live)]
                out[wh.name] = d
            return out

    def raw_spans(self, name: str | None = None, limit: int = 1000, since: float | None = None,
                  prefix: str | None = None, source: str | None = None, names: tuple = ()) -> list[tuple]:
        """The newest raw spans first, filtered: ``(name, source, prefix, start, stop, nbytes)``."""
        with self.lock:
            want_name = self.names.index.get(name, -1) if name is not None else None
            want_names = {self.names.index[n] for n in names if n in self.names.index} if names else None
            want_prefix = self.prefixes.index.get(prefix, -1) if prefix is not None else None
            want_source = self.sources.index.get(source, -1) if source is not None else None
            out = []
            i = self.s_next
            sn, ss, sp, st, sto, sb = (self.s_name, self.s_source, self.s_prefix, self.s_start, self.s_stop,
                                       self.s_bytes)
            nn, pn, srcn = self.names.names, self.prefixes.names, self.sources.names
            for _ in range(self.s_count):
                i = i - 1 if i else len(sn) - 1
                if want_name is not None and sn[i] != want_name:
                    continue
                if want_names is not None and sn[i] not in want_names:
                    continue
                if want_prefix is not None and sp[i] != want_prefix:
                    continue
                if want_source is not None and ss[i] != want_source:
                    continue
                if since is not None and sto[i] < since:
                    continue
                out.append((nn[sn[i]], srcn[ss[i]], pn[sp[i]], st[i], sto[i], sb[i]))
                if len(out) >= limit:
                    break
            return out

    def worker_state(self) -> list[dict]:
        """Each live worker's last payload (memory, network, disk, executing, ...), copied."""
        with self.lock:
            return [{"name": w.name, "address": w.address, "last_seen": w.last_seen, "spans_total": w.spans_total,
                     **w.last} for w in self.workers.values() if w.gone is None]

    def worker_names(self) -> list[str]:
        with self.lock:
            return list(self.workers)

    def prefix_stats(self) -> dict[str, list]:
        with self.lock:
            return {p: list(v) for p, v in self.prefix_totals.items()}

    def recent_transfers(self) -> tuple[list, list]:
        with self.lock:
            return list(self.transfers), list(self.transfer_totals)

    def nbytes(self) -> int:
        """Bytes held in the rings and the span ring (the arrays; the budget's main part)."""
        with self.lock:
            rings = [*self.cluster.values(), *self.prefix_series.values(), self.sched, self.slot_sec]
            for wh in self.workers.values():
                rings.extend(wh.series.values())
                rings.extend(wh.gauges.values())
            spans = (self.s_name, self.s_source, self.s_prefix, self.s_start, self.s_stop, self.s_bytes)
            return sum(r.buffer_info()[1] * r.itemsize for r in (*rings, *spans))


_ZEROS = {(w, c): array(c, bytes(array(c).itemsize * w)) for w in (1, 2, 3) for c in "df"}


def clean_prefix(prefix: str) -> str:
    """A key prefix as people name it: ``"('sum"`` (a Dask key's) -> ``"sum"``."""
    if prefix[:1] == "(":
        return prefix.lstrip("('\" ")
    return prefix
