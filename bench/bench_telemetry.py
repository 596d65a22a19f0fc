"""What telemetry costs: ``client.map`` of no-ops on two clusters alike but for the
``telemetry`` setting, measured in one run, rounds interleaved (on, off, on, off, ...) so
the machine's noise falls on both. The target is on/off >= 0.95 (DESIGN: telemetry is
always on and costs at most 5% of task throughput).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest

import frisky

pytestmark = pytest.mark.timeout(900)

N = 100_000
ROUNDS = 5


def noop(x):
    return x


def _cluster(telemetry: bool) -> frisky.LocalCluster:
    old = os.environ.get("FRISKY_TELEMETRY")
    os.environ["FRISKY_TELEMETRY"] = "1" if telemetry else "0"  # the scheduler and workers read it at start
    try:
        return frisky.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    finally:
        if old is None:
            del os.environ["FRISKY_TELEMETRY"]
        else:
            os.environ["FRISKY_TELEMETRY"] = old


def _round(client, offset: int) -> float:
    items = range(offset, offset + N)
    t0 = time.perf_counter()
    res = client.gather(client.map(noop, items))
    dt = time.perf_counter() - t0
    assert res == list(items)
    client.submit(noop, -offset, pure=False).result()  # the releases of that round are handled
    return dt


def test_telemetry_overhead_client_map_noop(benchmark, record):
    """``client.map(noop, range(100_000))`` + ``gather``: telemetry on vs off, same run."""
    on_c, off_c = _cluster(True), _cluster(False)
    times = {True: [], False: []}
    try:
        with on_c.get_client(set_as_default=False) as on, off_c.get_client(set_as_default=False) as off:
            _round(on, 0)  # warm both: workers import this module, functions are cached
            _round(off, 0)

            def run():
                k = len(times[True]) + 1
                for telemetry, client in ((True, on), (False, off)) if k % 2 else ((False, off), (True, on)):
                    times[telemetry].append(_round(client, k * 10 * N))

            benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    finally:
        on_c.close()
        off_c.close()
    on_rate = N / statistics.median(times[True])
    off_rate = N / statistics.median(times[False])
    record(tasks=N, on_tasks_per_s=on_rate, off_tasks_per_s=off_rate, ratio_on_off=on_rate / off_rate,
           best_ratio=min(times[False]) / min(times[True]))
