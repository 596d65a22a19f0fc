"""Dask collections on a 2-worker-process LocalCluster.

Rows: the 10,000-chunk ``da.ones(...).sum()``; client-side conversion and upload of a
materialized graph (tasks/s, the workers still running); a 1,000,000-task delayed tree:
time from ``compute()`` to its first task running (stamped by that task on its worker),
and end to end tasks/s. Side by side with dask's peers: ``scripts/compare_peers.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import pytest

pytestmark = pytest.mark.timeout(900)
dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import peers_dask  # noqa: E402 - the same tree and first-task stamp as compare_peers


def test_array_sum_10k_chunks(benchmark, client2, record):
    x = da.ones((20_000, 20_000), chunks=(200, 200)).sum()
    assert x.compute() == 4e8  # warm: workers import dask's modules
    times = []

    def run():
        t0 = time.perf_counter()
        assert x.compute() == 4e8
        times.append(time.perf_counter() - t0)

    benchmark.pedantic(run, rounds=3, iterations=1)
    record(ms=statistics.median(times) * 1e3)


def test_graph_upload_rate(benchmark, client2, record):
    """Conversion and upload of a 200k-node materialized graph, timed on the client."""
    from frisky.client.dask import submit_graph

    rates = []
    with tempfile.TemporaryDirectory() as d:

        def run():
            root, n_tasks, want = peers_dask.delayed_tree(100_000, os.path.join(d, "stamp"))
            graph = dict(root.__dask_graph__())
            key = root.key
            t0 = time.perf_counter()
            futures = submit_graph(client2, graph, [key])
            rates.append(n_tasks / (time.perf_counter() - t0))
            assert futures[key].result() == want

        benchmark.pedantic(run, rounds=3, iterations=1)
    record(tasks_per_s=statistics.median(rates))


def test_delayed_tree_1m(benchmark, client2, record):
    firsts, rates = [], []
    with tempfile.TemporaryDirectory() as d:
        stamp = os.path.join(d, "stamp")
        small, _, small_want = peers_dask.delayed_tree(100, stamp)
        assert small.compute() == small_want

        def run():
            root, n_tasks, want = peers_dask.delayed_tree(500_000, stamp)
            if os.path.exists(stamp):
                os.unlink(stamp)
            t0 = time.time()
            assert root.compute() == want
            rates.append(n_tasks / (time.time() - t0))
            with open(stamp) as f:
                firsts.append(float(f.read()) - t0)

        benchmark.pedantic(run, rounds=2, iterations=1)
    record(first_task_ms=statistics.median(firsts) * 1e3, tasks_per_s=statistics.median(rates))
