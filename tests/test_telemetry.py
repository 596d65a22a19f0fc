"""Telemetry without a cluster: per-second buckets from the ring, the payload's checks
(hostile input), the scheduler's history and its memory budget, and the pure analysis."""

from __future__ import annotations

import copy
import math
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frisky.telemetry import analysis, history, payload
from frisky.telemetry.history import History
from frisky.telemetry.recorder import Recorder
from frisky.telemetry.ship import Shipper

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_payload(t: float | None = None, names: int = 3, spans: int = 2, prefixes: int = 2) -> dict:
    """A telemetry payload as a worker ships it."""
    t = time.time() if t is None else t
    sec = int(t)
    return {
        "v": 1, "time": t,
        "buckets": [[sec - 1, {f"span.{i}": [3, 0.5, 100] for i in range(names)}],
                    [sec, {"worker.exec.call": [10, 0.25, 4000]}]],
        "prefixes": [[sec, {f"p{i}": [5, 0.1, 800, 1] for i in range(prefixes)}]],
        "spans": [["worker.exec.call", t - 0.5, t - 0.4, "p0", 12] for _ in range(spans)],
        "spans_total": 13, "lost": 0,
        "memory": {"managed": 10, "unmanaged": 20, "spilled": 0, "in_transit": 0, "recv_pool": 0, "rss": 30,
                   "limit": 1000, "target_at": 600, "spill_at": 700, "pause_at": 800, "terminate_at": 950,
                   "paused": False},
        "network": {"recv_bytes": 5, "sent_bytes": 6}, "disk": {"read_bytes": 0, "written_bytes": 0},
        "executing": [["p0-abc", t - 2.0]], "transfers": [["k-1", "tcp://127.0.0.1:1", 1, 1000, 0.01]],
        "in_flight": [["k-2", "tcp://127.0.0.1:1", 1, 0, t - 0.1]], "cpu_seconds": 1.5,
    }


# ------------------------------------------------------------------ shipping
def test_buckets_are_the_growth_of_the_totals_per_name_and_prefix():
    rec = Recorder(maxlen=1000)
    ship = Shipper(rec)
    base = time.perf_counter_ns()
    for i in range(5):
        rec.span("worker.exec.call", base + i * 1000, "inc", base + i * 1000 + 500, 8)
    rec.span("spill.write", base, "x", base + 2_000_000, 4096)
    rec.add("worker.deserialize", 7, 7000)
    got = ship.collect()
    totals = {}
    for _, b in got["buckets"]:
        for name, (c, s, nb) in b.items():
            t = totals.setdefault(name, [0, 0.0, 0])
            t[0] += c
            t[1] += s
            t[2] += nb
    assert totals["worker.exec.call"][0] == 5 and totals["worker.exec.call"][2] == 40
    assert math.isclose(totals["worker.exec.call"][1], 5 * 500e-9, rel_tol=1e-6)
    assert totals["spill.write"] == [1, pytest.approx(0.002), 4096]
    assert totals["worker.deserialize"][0] == 7
    assert got["spans_total"] == 13
    prefixes = {p: v for _, d in got["prefixes"] for p, v in d.items()}
    assert prefixes["inc"][0] == 5 and prefixes["inc"][2] == 40
    assert len(got["spans"]) == 6 and abs(got["spans"][0][1] - time.time()) < 60
    payload.parse({**valid_payload(), **got})
    # the next call ships only what came since
    rec.span("worker.exec.call", base, "inc", base + 10)
    rec.span("worker.exec.error", base, "inc", base + 10)
    again = ship.collect()
    assert again["spans_total"] == 2 and len(again["spans"]) == 2
    assert again["prefixes"][0][1] == {"inc": [1, pytest.approx(1e-8), 0, 1]}
    last = ship.collect()
    assert last["spans_total"] == 0 and last["buckets"] == last["prefixes"] == last["spans"] == []


def test_many_or_long_prefixes_still_make_a_valid_payload():
    rec = Recorder(maxlen=1000)
    ship = Shipper(rec)
    t = time.perf_counter_ns()
    for i in range(400):  # more prefixes in one heartbeat than a payload may name
        for _ in range(1 + (i == 7)):
            rec.call(f"p{i}", t, t + 10, 1)
    rec.call("x" * 500, t, t + 10, 1)
    got = ship.collect()
    payload.parse({**valid_payload(), **got})  # before: refused whole (too many, too long)
    prefixes = got["prefixes"][0][1]
    assert len(prefixes) == payload.MAX_NAMES and prefixes["p7"][0] == 2, "the busiest keep their names"
    assert sum(v[0] for v in prefixes.values()) == 402, "nothing is lost: the rest is other"


def test_a_wrapped_ring_is_counted_as_lost_and_the_sample_is_bounded():
    rec = Recorder(maxlen=100)
    ship = Shipper(rec)
    t = time.perf_counter_ns()
    rec.span("a", t, "", t + 1)
    ship.collect()
    for _ in range(500):
        rec.span("a", t, "", t + 1)
    got = ship.collect(max_sample=50)
    # the totals count every span; only the sample lost some
    assert got["lost"] == 1 and got["spans_total"] == 500 and len(got["spans"]) == 50
    assert got["buckets"][0][1]["a"][0] == 500


# ------------------------------------------------------------------ the payload, hostile
def test_a_valid_payload_parses():
    p = valid_payload()
    assert payload.parse(p) is p


KILLERS = [
    ("not a map", []),
    ("wrong version", {**valid_payload(), "v": 2}),
    ("NaN time", {**valid_payload(), "time": float("nan")}),
    ("negative count", {**valid_payload(), "buckets": [[1, {"a": [-1, 0.0, 0]}]]}),
    ("infinite seconds", {**valid_payload(), "buckets": [[1, {"a": [1, float("inf"), 0]}]]}),
    ("bucket not a pair", {**valid_payload(), "buckets": [[1]]}),
    ("too many seconds", {**valid_payload(), "buckets": [[i, {}] for i in range(500)]}),
    ("too many names", {**valid_payload(), "buckets": [[1, {str(i): [1, 0.0, 0] for i in range(1000)}]]}),
    ("huge name", {**valid_payload(), "buckets": [[1, {"x" * 10_000: [1, 0.0, 0]}]]}),
    ("unhashable-ish name", {**valid_payload(), "buckets": [[1, {1: [1, 0.0, 0]}]]}),
    ("too many spans", {**valid_payload(), "spans": [["a", 1.0, 2.0, "", 0]] * 201}),
    ("span backwards", {**valid_payload(), "spans": [["a", 2.0, 1.0, "", 0]]}),
    ("memory missing", {**valid_payload(), "memory": {}}),
    ("paused not bool", {**valid_payload(), "memory": {**valid_payload()["memory"], "paused": 1}}),
    ("executing too long", {**valid_payload(), "executing": [["k", 1.0]] * 5000}),
    ("transfer short", {**valid_payload(), "transfers": [["k", "a", 1]]}),
    ("bool as number", {**valid_payload(), "cpu_seconds": True}),
]


@pytest.mark.parametrize("why,bad", KILLERS, ids=[k[0] for k in KILLERS])
def test_known_bad_payloads_raise_bad_telemetry(why, bad):
    with pytest.raises(payload.BadTelemetry):
        payload.parse(bad)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def mutated(draw):
    p = copy.deepcopy(valid_payload())
    path = []
    node = p
    for _ in range(draw(st.integers(1, 4))):  # walk down a few levels, then change what is there
        if isinstance(node, dict) and node:
            k = draw(st.sampled_from(sorted(node, key=str)))
        elif isinstance(node, list) and node:
            k = draw(st.integers(0, len(node) - 1))
        else:
            break
        path.append((node, k))
        node = node[k]
    if path:
        parent, k = path[-1]
        how = draw(st.sampled_from(["replace", "drop"]))
        if how == "drop" and isinstance(parent, dict):
            del parent[k]
        elif how == "drop":
            parent.pop(k)
        else:
            parent[k] = draw(json_value)
    return p


@SETTINGS
@given(p=mutated())
def test_mutated_payloads_parse_or_raise_bad_telemetry_only(p):
    try:
        payload.parse(p)
    except payload.BadTelemetry:
        return
    h = History()  # what parses is kept without error
    h.ingest("w", "tcp://127.0.0.1:1", p, time.time())


# ------------------------------------------------------------------ history
def test_history_keeps_series_per_worker_and_cluster():
    h = History()
    now = time.time()
    for w in ("a", "b"):
        h.ingest(w, f"tcp://{w}:1", valid_payload(now), now)
    t0, series = h.span_series(10)
    assert t0 == int(now) - 9
    assert series["worker.exec.call"][-1] == pytest.approx(0.5)  # 0.25 s from each worker
    _, a = h.span_series(10, "a")
    assert a["worker.exec.call"][-1] == pytest.approx(0.25)
    assert h.prefix_stats()["p0"][:4] == [10, pytest.approx(0.2), 1600, 2]
    assert len(h.raw_spans(name="worker.exec.call")) == 4
    assert h.recent_transfers()[1][0] == 2
    # seconds from the future (clock skew) land now; from before the window, nowhere
    late = valid_payload(now)
    late["buckets"] = [[int(now) + 100, {"x": [1, 1.0, 0]}], [int(now) - 10_000, {"y": [1, 1.0, 0]}]]
    h.ingest("a", "tcp://a:1", late, now)
    _, s = h.span_series(5)
    assert s["x"][-1] == 1.0 and sum(s.get("y", [0])) == 0
    # ageing: 700 s on, nothing of it is left in the window
    h.tick(now + 700)
    _, s = h.span_series(history.SECONDS)
    assert sum(s["worker.exec.call"]) == 0


def test_the_span_ring_grows_in_order_until_whole_then_wraps(monkeypatch):
    monkeypatch.setattr(history, "SPAN_RING", 10_000)
    h = History()
    t = 1_800_000_000.0
    for batch in range(7):  # 7 x 2,000 spans: grows 4,096 -> 8,192 -> 10,000, then wraps
        spans = [["a", t + batch * 2000 + i, t + batch * 2000 + i, "p", 1] for i in range(2000)]
        h.ingest_local("scheduler", {"buckets": [], "spans": spans, "spans_total": len(spans)}, t)
        if batch == 0:
            assert len(h.s_name) == 4096, "small first"
    assert len(h.s_name) == 10_000 and h.s_count == 10_000
    starts = [s[3] for s in h.raw_spans(limit=20_000)]
    assert len(starts) == 10_000 and starts == sorted(starts, reverse=True), "newest first, none lost in growth"
    assert starts[0] == t + 13_999 and starts[-1] == t + 4_000


@pytest.mark.timeout(300)
def test_history_stays_within_its_memory_budget():
    """Ten minutes of heartbeats from 64 workers, driven straight into the history."""
    workers = 64
    names = ["worker.exec.call", "worker.exec.error", "worker.deserialize", "worker.serialize",
             "worker.serialize.share", "worker.transfer.recv", "worker.transfer.send", "tcp.send.compress",
             "tcp.send.choose", "tcp.recv.copy", "tcp.recv.decompress", "spill.write", "spill.read",
             "shm.write", "shm.map", "worker.paused"]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        h = History()
        start = 1_800_000_000.0
        base = valid_payload(start)
        for sec in range(0, history.SECONDS + 60, 2):  # a heartbeat every 2 s, a bucket per second
            now = start + sec
            for w in range(workers):
                p = dict(base)
                p["time"] = now
                p["buckets"] = [[int(now) - 1, {n: [3, 0.01, 100] for n in names}],
                                [int(now), {n: [3, 0.01, 100] for n in names}]]
                p["prefixes"] = [[int(now), {f"prefix{(w + sec) % 300}": [4, 0.02, 10, 0]}]]
                p["spans"] = [["worker.exec.call", now - 0.5, now - 0.4, f"prefix{sec % 300}", 8]] * (
                    200 if sec < 20 else 4)
                h.ingest(f"worker-{w}", f"tcp://10.0.0.{w}:1", p, now)
            h.tick(now)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert h.s_count == history.SPAN_RING
    assert len(h.workers) == workers and all(len(w.series) == len(names) for w in h.workers.values())
    assert used <= history.BUDGET_64_WORKERS, f"{used / 2**20:.1f} MiB"
    print(f"history of 64 workers, 10 minutes: {used / 2**20:.1f} MiB (budget "
          f"{history.BUDGET_64_WORKERS / 2**20:.0f} MiB)")


# ------------------------------------------------------------------ analysis
def test_components_fold_span_names():
    out = analysis.components({"worker.exec.call": [1, 2], "tcp.send.compress": [0.5, 0], "spill.read": [0, 1],
                               "scheduler.handle.submit": [0.1, 0.1], "shm.map": [0.2, 0.2],
                               "worker.paused": [9, 9]}, 2)
    assert out == {"compute": [1, 2], "network": [0.5, 0], "disk": [0, 1], "scheduler": [0.1, 0.1],
                   "other": [0.2, 0.2]}


def test_stragglers_rank_the_slow_worker_first_and_name_the_span():
    per = {w: {"worker.exec.call": [100, 1.0], "worker.deserialize": [100, 0.1]} for w in ("a", "b", "c")}
    per["b"]["worker.exec.call"] = [100, 5.0]
    rows = analysis.stragglers(per)
    assert rows[0]["worker"] == "b" and rows[0]["excess_seconds"] == pytest.approx(4.0)
    dev = rows[0]["deviations"][0]
    assert dev["span"] == "worker.exec.call" and dev["ratio"] == pytest.approx(5.0) and dev["calls"] == 100
    assert rows[1]["excess_seconds"] == 0 and not rows[1]["deviations"]


def test_outliers_need_peers_and_a_floor():
    assert analysis.outliers({"a": {"rss": 1e9}, "b": {"rss": 1}}) == []
    m = {"a": {"rss": 100e6}, "b": {"rss": 110e6}, "c": {"rss": 900e6}, "d": {"rss": 105e6}}
    out = analysis.outliers(m, {"rss": 64e6})
    assert [(o["worker"], o["metric"]) for o in out] == [("c", "rss")]
    assert "median" in out[0]["note"]
    assert analysis.outliers(m, {"rss": 1e12}) == []


def test_percentiles():
    assert analysis.percentiles([]) == {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    p = analysis.percentiles([float(i) for i in range(1, 101)])
    assert (p["count"], p["p50"], p["p90"], p["p99"], p["max"]) == (100, 50.0, 90.0, 99.0, 100.0)


def test_blocked_names_each_reason():
    facts = {
        "active": 5, "progressing": False, "mean_seconds": {"slow": 0.1},
        "workers": [{"name": "w0", "paused": True, "processing": 2, "memory": 900, "limit": 1000},
                    {"name": "w1", "paused": False, "processing": 1, "memory": 1, "limit": 1000}],
        "executing": [{"key": "slow-1", "prefix": "slow", "worker": "w1", "age": 12.0},
                      {"key": "quick-1", "prefix": "quick", "worker": "w1", "age": 0.5}],
        "unplaced": {"count": 1, "examples": [{"key": "r-1", "restriction": ["nobody"]}]},
        "lost": {"count": 2, "examples": [{"key": "x-1", "waiting_on": "y-1"}]},
        "missing": {"count": 0, "examples": []},
        "upstream": {"count": 1, "examples": [{"key": "z-1", "upstream": "boom-1"}]},
    }
    got = analysis.blocked(facts)
    kinds = {r["kind"]: r for r in got["reasons"]}
    assert got["progressing"] is False
    assert set(kinds) == {"paused-worker", "no-matching-worker", "long-running", "lost-dependency",
                          "erred-upstream"}
    assert kinds["long-running"]["examples"] == [{"key": "slow-1", "worker": "w1", "age": 12.0}]
    assert kinds["no-matching-worker"]["examples"][0]["restriction"] == ["nobody"]
    assert analysis.blocked({"active": 3, "workers": []})["reasons"][0]["kind"] == "no-workers"


def test_the_ring_keeps_no_python_object_per_span():
    """Spans are packed into the ring: objects kept per span would pin the allocator's arenas
    after a large graph is released (the scheduler's RSS stayed far above where it began)."""
    rec = Recorder(maxlen=20_000)
    t = time.perf_counter_ns()
    rec.span("warm", t, "p0", t + 1)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(20_000):
            rec.span("worker.exec.call", t + 10**12 + i, "p" + str(i % 3), t + 2 * 10**12 + i, 10**12 + i)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    blocks = sum(s.count_diff for s in after.compare_to(before, "filename") if s.count_diff > 0)
    assert blocks < 200, blocks
    spans = rec.spans
    assert len(spans) == 20_000 and spans[-1] == ("worker.exec.call", t + 10**12 + 19_999, t + 2 * 10**12 + 19_999,
                                                  "p" + str(19_999 % 3), 10**12 + 19_999)
    assert rec.totals["worker.exec.call"][0] == 20_000
