"""End-to-end task throughput and latency on a 2-worker-process LocalCluster.

Rows: ``client.map`` of no-ops; ``FriskyExecutor.map`` and ``.submit``; a tree
reduction; one ``submit().result()`` round trip; and 10k / 100k / 1M-task graph
submission (time to the first task run, and tasks/s at each size).
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import tempfile
import time

import pytest

import frisky

# pyproject's 60 s test timeout is too short for a few rounds on a busy machine
pytestmark = pytest.mark.timeout(600)

N_MAP = 200_000
N_SUBMIT = 100_000
N_LEAVES = 100_000
N_ROUNDTRIPS = 300

_offsets = itertools.count(1)


# task functions: module level, so workers import them by reference
def noop(x):
    return x


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def mark(x):
    """No-op, except that a str argument is a path where to write the time it ran."""
    if type(x) is str:
        with open(x, "w") as f:
            f.write(repr(time.time()))
    return x


def settle(client) -> None:
    """Wait until the cluster has processed everything sent so far, e.g. the releases of
    futures just dropped (hundreds of thousands take seconds), so they do not leak into
    the next timed region. Messages from one client are handled in order."""
    time.sleep(0.05)  # lets the client's I/O thread send the queued releases
    client.submit(inc, 0, pure=False).result()


def _fresh_range(n: int) -> range:
    # each round gets inputs no earlier round used, so pure keys never hit old results
    start = next(_offsets) * 10_000_000
    return range(start, start + n)


# --------------------------------------------------------------------- rows 1-3
def test_client_map_noop(benchmark, client2, record):
    """Row 1: ``client.map(noop, range(200_000))`` + ``gather``, 2 worker processes."""
    times = []
    state = {}

    def setup():
        state.clear()  # drops the previous round's futures
        settle(client2)
        state["items"] = _fresh_range(N_MAP)

    def run():
        items = state["items"]
        t0 = time.perf_counter()
        futs = client2.map(noop, items)
        res = client2.gather(futs)
        times.append(time.perf_counter() - t0)
        assert res == list(items)
        state["futs"] = futs  # dropped in the next setup, outside the timed region

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    state.clear()
    record(tasks=N_MAP, tasks_per_s=N_MAP / statistics.median(times),
           best_tasks_per_s=N_MAP / min(times))


@pytest.fixture(scope="module")
def executor2():
    with frisky.FriskyExecutor(2) as ex:
        yield ex


def test_executor_map_noop(benchmark, executor2, record):
    """Row 2: ``FriskyExecutor(2).map(noop, range(200_000))`` (chunksize=1)."""
    times = []

    def run():
        settle(executor2.client)
        t0 = time.perf_counter()
        res = list(executor2.map(noop, range(N_MAP)))
        times.append(time.perf_counter() - t0)
        assert res == list(range(N_MAP))

    benchmark.pedantic(run, rounds=3, iterations=1)
    record(tasks=N_MAP, tasks_per_s=N_MAP / statistics.median(times),
           best_tasks_per_s=N_MAP / min(times))


def test_executor_submit_noop(benchmark, executor2, record):
    """Row 3: ``[ex.submit(noop, i) for i in range(100_000)]`` then every ``.result()``."""
    times = []

    def run():
        settle(executor2.client)
        t0 = time.perf_counter()
        fs = [executor2.submit(noop, i) for i in range(N_SUBMIT)]
        res = [f.result() for f in fs]
        times.append(time.perf_counter() - t0)
        assert res == list(range(N_SUBMIT))

    benchmark.pedantic(run, rounds=3, iterations=1)
    record(tasks=N_SUBMIT, tasks_per_s=N_SUBMIT / statistics.median(times),
           best_tasks_per_s=N_SUBMIT / min(times))


# ----------------------------------------------------------------------- row 4
def tree_reduce(client, n_leaves: int, offset: int = 0):
    """Leaves ``client.map(inc, ...)``, then pairwise ``client.submit(add, a, b)`` layers
    until one future is left, each layer dropped as the next replaces it (as user code
    would). Returns (root future, number of tasks)."""
    layer = client.map(inc, range(offset, offset + n_leaves))
    n_tasks = n_leaves
    while len(layer) > 1:
        nxt = [client.submit(add, layer[i], layer[i + 1]) for i in range(0, len(layer) - 1, 2)]
        n_tasks += len(nxt)
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    return layer[0], n_tasks


def test_tree_reduction(benchmark, client2, record):
    """Row 4: tree reduction over 100,000 leaves, 2 workers; tasks/s counts every task."""
    times = []
    counts = []
    state = {}

    def setup():
        state.clear()
        settle(client2)
        state["offset"] = next(_offsets) * 10_000_000

    def run():
        off = state["offset"]
        t0 = time.perf_counter()
        root, n_tasks = tree_reduce(client2, N_LEAVES, off)
        total = root.result()
        times.append(time.perf_counter() - t0)
        counts.append(n_tasks)
        # sum of inc(x) for x in off..off+N-1
        assert total == N_LEAVES * off + N_LEAVES * (N_LEAVES + 1) // 2
        state["root"] = root

    benchmark.pedantic(run, setup=setup, rounds=2, iterations=1)
    state.clear()
    record(leaves=N_LEAVES, tasks=counts[0], tasks_per_s=counts[0] / statistics.median(times),
           best_tasks_per_s=counts[0] / min(times))


# ----------------------------------------------------------------------- row 7
def test_roundtrip_latency(benchmark, client2, record):
    """Row 7: one ``client.submit(inc, i, pure=False).result()`` at a time, processes."""
    samples = []

    def run():
        settle(client2)
        for i in range(N_ROUNDTRIPS):
            t0 = time.perf_counter()
            r = client2.submit(inc, i, pure=False).result()
            samples.append(time.perf_counter() - t0)
            assert r == i + 1

    benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    samples = samples[N_ROUNDTRIPS:]  # drop the warm-up round
    record(roundtrips=len(samples), median_us=statistics.median(samples) * 1e6,
           p90_us=statistics.quantiles(samples, n=10)[-1] * 1e6)


# ---------------------------------------------------------------------- row 12
def test_graph_submission(benchmark, client2, record):
    """Row 12: ``client.map`` of 10k, 100k and 1M independent tasks: time from the call
    until the first task has run (it writes the time to a marker file), and tasks/s
    from the call until ``gather`` returns, at each size (throughput should be flat)."""
    sizes = (10_000, 100_000, 1_000_000)
    figures = {}
    tmpdir = tempfile.mkdtemp(prefix="frisky-bench-first-")

    def run():
        for n in sizes:
            settle(client2)
            start = next(_offsets) * 10_000_000
            marker = os.path.join(tmpdir, str(start))  # a new path: a new pure key
            items = [marker, *range(start + 1, start + n)]  # the first task writes the marker
            t_wall = time.time()
            t0 = time.perf_counter()
            futs = client2.map(mark, items)
            t_submitted = time.perf_counter()
            res = client2.gather(futs)
            dt = time.perf_counter() - t0
            with open(marker) as f:
                t_first = float(f.read())
            assert res == items
            del futs, res, items  # released by settle() before the next size
            label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
            figures[f"tasks_per_s_{label}"] = n / dt
            figures[f"first_task_ms_{label}"] = (t_first - t_wall) * 1e3
            figures[f"map_call_s_{label}"] = t_submitted - t0

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    record(**figures)
