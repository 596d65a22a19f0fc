"""The data plane: large arrays between worker processes (shared memory, forced TCP,
gather to the client) and many results, each with its figure in extra_info.

Every consumer reads what it receives. Rows: 256 MiB float64 made on worker A and summed
by a task on worker B (every element, and one element per 4 KiB page), the same sum on
A (the floor: no transfer at all), 1 MiB A -> B, 10,000 results of 64 KiB-1 MiB made on
one worker and summed on the other, ``gather`` to the client, and forced TCP for random,
constant (``np.ones``) and ``arange`` data. Each time runs from submitting the consumer
to its answer.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

import frisky

pytestmark = pytest.mark.timeout(900)
MiB = 2**20


def make_random(n: int):
    return np.random.default_rng(0).standard_normal(n)


def make_ones(n: int):
    return np.ones(n)


def make_arange(n: int):
    return np.arange(n, dtype="float64")


def full(a) -> float:
    return float(a.sum())


def per_page(a) -> float:
    return float(a[::512].sum())  # 512 float64 = one 4 KiB page


def make_sized(i: int, seed: int = 0):
    """Result ``i`` of the many-results row: 64 KiB-1 MiB of float64 (fixed per ``i``)."""
    n = int(np.random.default_rng(seed + i).integers(64 * 1024, MiB + 1)) // 8
    return np.ones(n)


def sum_all(*arrays) -> float:
    return float(sum(a.sum() for a in arrays))


def _move(client, make, n: int, consume, rounds: int = 5, on_a: bool = False) -> float:
    """Median seconds for a task (on worker B, or A with ``on_a``) to read worker A's array."""
    a, b = sorted(client.scheduler_info()["workers"])
    times = []
    for _ in range(rounds):
        x = client.submit(make, n, workers=[a], pure=False)
        frisky.wait([x])
        t0 = time.perf_counter()
        client.submit(consume, x, workers=[a if on_a else b], pure=False).result()
        times.append(time.perf_counter() - t0)
        del x
    return statistics.median(times)


def test_shared_memory_256mib_read_on_b_and_on_a(benchmark, client2, record):
    out = {}
    n = 256 * MiB // 8

    def run():
        out["full"] = _move(client2, make_random, n, full)
        out["page"] = _move(client2, make_random, n, per_page)
        out["floor"] = _move(client2, make_random, n, full, on_a=True)

    benchmark.pedantic(run, rounds=1, iterations=1)
    record(ms_full_a_to_b=out["full"] * 1e3, ms_per_page_a_to_b=out["page"] * 1e3, ms_full_on_a=out["floor"] * 1e3,
           full_over_floor=out["full"] / out["floor"])


def test_shared_memory_1mib(benchmark, client2, record):
    out = {}

    def run():
        out["t"] = _move(client2, make_random, MiB // 8, full, rounds=21)

    benchmark.pedantic(run, rounds=1, iterations=1)
    record(ms_1mib_a_to_b=out["t"] * 1e3)


def test_many_results_64kib_to_1mib(benchmark, client2, record, count=10_000):
    a, b = sorted(client2.scheduler_info()["workers"])
    times = []
    expected = float(sum(make_sized(i).size for i in range(count)))

    def run():
        xs = client2.map(make_sized, range(count), workers=[a], pure=False)
        frisky.wait(xs)
        t0 = time.perf_counter()
        assert client2.submit(sum_all, *xs, workers=[b], pure=False).result() == expected
        times.append(time.perf_counter() - t0)
        del xs

    benchmark.pedantic(run, rounds=3, iterations=1)
    record(ms_10k_results=statistics.median(times) * 1e3, gbps=expected * 8 / statistics.median(times) / 1e9)


def test_gather_256mib_to_client(benchmark, client2, record):
    a = sorted(client2.scheduler_info()["workers"])[0]
    times = []

    def run():
        x = client2.submit(make_random, 256 * MiB // 8, workers=[a], pure=False)
        frisky.wait([x])
        t0 = time.perf_counter()
        assert np.isfinite(x.result().sum())
        times.append(time.perf_counter() - t0)

    benchmark.pedantic(run, rounds=3, iterations=1)
    record(gbps_with_sum=256 * MiB / statistics.median(times) / 1e9)


def test_forced_tcp_random_ones_arange(benchmark, record):
    out = {}
    n = 256 * MiB // 8

    def run():
        with frisky.LocalCluster(n_workers=2, transport="tcp") as c, c.get_client() as cl:
            # five rounds: on this VM a round now and then pays for fresh pages from the host
            for name, make in (("random", make_random), ("ones", make_ones), ("arange", make_arange)):
                out[name] = _move(cl, make, n, full)

    benchmark.pedantic(run, rounds=1, iterations=1)
    record(**{f"gbps_{k}": 256 * MiB / v / 1e9 for k, v in out.items()})
