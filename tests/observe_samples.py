"""API v1 replies shaped as the contract says, with busy, odd values (long names, big
numbers, a paused worker, an erred prefix), for the renderers' unit tests. The tests
against real clusters are in test_observe.py."""

from __future__ import annotations

NOW = 1_765_000_000.0
T0 = NOW - 60


def _ramp(n: int, top: float) -> list[float]:
    return [top * (i % 17) / 16 for i in range(n)]


MEMORY = {"used": 3 * 2**30, "limit": 8 * 2**30, "peak": 5 * 2**30, "managed": 2 * 2**30, "unmanaged": 2**30,
          "spilled": 300 * 2**20, "in_transit": 12 * 2**20, "recv_pool": 64 * 2**20}

OVERVIEW = {
    "version": 1, "now": NOW, "started": NOW - 754.2, "wall_seconds": 754.2,
    "workers": {"total": 4, "idle": 1, "paused": 1, "busy": 2},
    "tasks": {"waiting": 12, "queued": 340, "processing": 4, "memory": 1203, "erred": 1, "released": 98000,
              "total_submitted": 123456, "done": 99203},
    "spans_total": 12_345_678, "dropped_telemetry": 0,
    "memory": MEMORY,
    "spilled_bytes": 900 * 2**20, "unspilled_bytes": 600 * 2**20,
    "network": {"recv_bytes": 12 * 2**30, "sent_bytes": 12 * 2**30},
    "disk": {"read_bytes": 600 * 2**20, "written_bytes": 900 * 2**20},
    "components": {"t0": T0, "series": {"compute": _ramp(60, 3.9), "network": _ramp(60, 1.2),
                                        "disk": _ramp(60, 0.2), "scheduler": _ramp(60, 0.05),
                                        "other": [0.0] * 60},
                   "step": 1, "totals": {"compute": 120.5, "network": 40.2, "disk": 6.1, "scheduler": 1.5, "other": 0.0}},
    "top_spans": [{"name": name, "seconds": s, "count": c, "bytes": b, "series": _ramp(60, s / 30)}
                  for name, s, c, b in [("worker.exec.call", 110.0, 99000, 0),
                                        ("worker.transfer.fetch_with_a_very_long_span_name", 38.0, 4000, 11 * 2**30),
                                        ("spill.write", 6.0, 300, 900 * 2**20)]],
    "outliers": [{"worker": "tcp://10.0.0.3:40123-worker-with-long-name", "metric": "compute_seconds",
                  "value": 60.0, "median": 20.0, "note": "3.0x the median worker's compute time"},
                 {"worker": "2", "metric": "spilled_bytes", "value": 900 * 2**20, "median": 0, "note": ""}],
}

WORKERS = {
    "version": 1, "now": NOW,
    "workers": [{"name": str(i) if i != 3 else "a-worker-name-much-longer-than-the-column-can-hold",
                 "address": f"tcp://127.0.0.1:{40000 + i}", "host": "127.0.0.1", "pid": 1000 + i, "nthreads": 2,
                 "status": ("running", "paused", "idle", "running")[i], "processing": 2 * i,
                 "in_memory": 300 * i, "nbytes": 2 * 2**30, "spans_total": 1000 * i,
                 "memory": {**MEMORY, "rss": 3 * 2**30, "target_at": 6 * 2**30 * 8 // 10,
                            "pause_at": 8 * 8 * 2**30 // 10, "spill_at": 7 * 8 * 2**30 // 10,
                            "terminate_at": 95 * 8 * 2**30 // 100},
                 "network": {"recv_bytes": 3 * 2**30, "sent_bytes": 2**30},
                 "disk": {"read_bytes": 150 * 2**20, "written_bytes": 225 * 2**20}, "cpu_seconds": 190.5 + i,
                 "executing": [{"key": f"inc-{j}", "prefix": "inc", "age": 1.5 * j} for j in range(i)],
                 "last_seen": NOW - (0.4 if i != 2 else 30)} for i in range(4)],
}

PREFIXES = {
    "version": 1, "now": NOW,
    "prefixes": [{"prefix": "inc", "waiting": 0, "queued": 340, "processing": 4, "memory": 1000, "erred": 0,
                  "released": 98000, "done": 99000, "compute_seconds": 100.5, "bytes": 40 * 2**20, "errors": 0},
                 {"prefix": "block_sum_with_an_extraordinarily_long_function_name", "waiting": 12, "queued": 0,
                  "processing": 0, "memory": 200, "erred": 1, "released": 0, "done": 200, "compute_seconds": 20.0,
                  "bytes": 11 * 2**30, "errors": 3},
                 {"prefix": "add", "waiting": 0, "queued": 0, "processing": 0, "memory": 3, "erred": 0,
                  "released": 0, "done": 3, "compute_seconds": 0.001, "bytes": 300, "errors": 0}],
}

TRANSFERS = {
    "version": 1, "now": NOW,
    "in_flight": [{"key": "('block_sum-8f3a9c0e1d2b4a5f6e7d8c9b0a1f2e3d', 17)", "from": "ipc:///tmp/frisky-ipc-x/w-0",
                   "to": "ipc:///tmp/frisky-ipc-x/w-1", "nkeys": 1, "bytes": 64 * 2**20, "age": 7.5}],
    "slowest": [{"key": f"block_sum-{i}", "from": "0", "to": "1", "nkeys": 1, "time": NOW - i, "bytes": 64 * 2**20, "seconds": 0.5 / (i + 1),
                 "bandwidth": 64 * 2**20 / (0.5 / (i + 1))} for i in range(20)],
    "totals": {"count": 4000, "bytes": 11 * 2**30, "seconds": 38.0},
}

CLIENTS = {
    "version": 1, "now": NOW,
    "clients": [{"id": 1, "name": "notebook", "connected": True, "activity": "uploading",
                 "detail": "uploading a graph of 1,000,000 tasks", "tasks_total": 1_000_000, "tasks_done": 12_000,
                 "graph": {"built": 1_000_000, "uploaded": 400_000, "total": 1_000_000}, "waiting_on": 0,
                 "since": NOW - 4.2, "for_seconds": 4.2},
                {"id": 2, "name": "", "connected": True, "activity": "waiting",
                 "detail": "gather of 12 futures", "tasks_total": 12, "tasks_done": 11, "graph": None,
                 "waiting_on": 1, "since": NOW - 19.5, "for_seconds": 19.5},
                {"id": 3, "name": "idle one", "connected": False, "activity": "idle", "detail": "",
                 "tasks_total": 0, "tasks_done": 0, "graph": None, "waiting_on": 0, "since": NOW - 2,
                 "for_seconds": 2.0}],
}

BLOCKED = {
    "version": 1, "now": NOW, "progressing": False,
    "reasons": [{"kind": "paused-worker", "count": 1, "note": "over their memory pause threshold",
                 "examples": [{"worker": "1", "processing": 3, "memory": 7 * 2**30, "limit": 8 * 2**30}]},
                {"kind": "long-running", "count": 1, "note": "running longer than 10x its prefix's median",
                 "examples": [{"key": "sleepy-0", "worker": "1", "age": 125.0}]},
                {"kind": "no-matching-worker", "count": 7, "note": "",
                 "examples": [{"key": f"inc-{i}", "restriction": ["no-such-worker"]} for i in range(5)]},
                {"kind": "missing-dependency", "count": 2, "note": "",
                 "examples": [{"key": "add-1", "waiting_on": "inc-0"}]},
                {"kind": "erred-upstream", "count": 1, "note": "",
                 "examples": [{"key": "sum-0", "upstream": "fail-0"}]}],
}

TIMELINE = {
    "version": 1, "now": NOW, "t0": T0, "step": 1, "view": "component",
    "series": {"compute": _ramp(60, 3.9), "network": _ramp(60, 1.2), "disk": [0.0] * 60,
               "scheduler": _ramp(60, 0.05), "other": [0.0] * 60},
}

TIMELINE_DETAILED = {
    "version": 1, "now": NOW, "t0": T0, "step": 1, "view": "detailed",
    "series": {f"worker.exec.step_{i:02d}_with_a_long_name": _ramp(60, i / 10) for i in range(25)},
}

SPANS = {
    "version": 1, "now": NOW,
    "spans": [{"name": "worker.exec.call", "worker": str(i % 4), "prefix": "inc" if i % 3 else "",
               "start": NOW - i - 0.01, "stop": NOW - i, "seconds": 0.01 * (i + 1), "bytes": 0} for i in range(20)],
    "stats": {"count": 99000, "p50": 0.0012, "p90": 0.004, "p99": 0.031, "max": 2.5},
}

STRAGGLERS = {
    "version": 1, "now": NOW, "since": 60,
    "workers": [{"worker": "3", "excess_seconds": 40.5,
                 "deviations": [{"span": "worker.exec.call", "worker_seconds_per_call": 0.2,
                                 "median_seconds_per_call": 0.01, "ratio": 20.0, "calls": 200,
                                 "excess_seconds": 38.0},
                                {"span": "spill.write", "worker_seconds_per_call": 0.02,
                                 "median_seconds_per_call": 0.01, "ratio": 2.0, "calls": 30,
                                 "excess_seconds": 0.3}]},
                {"worker": "0", "excess_seconds": 0.0, "deviations": []},
                {"worker": "1", "excess_seconds": 0.0, "deviations": []}],
}

ALL = {"overview": OVERVIEW, "workers": WORKERS, "prefixes": PREFIXES, "transfers": TRANSFERS, "clients": CLIENTS,
       "blocked": BLOCKED, "timeline": TIMELINE, "spans": SPANS, "stragglers": STRAGGLERS}
