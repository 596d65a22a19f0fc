"""The data plane: large arrays between worker processes (shared memory, forced TCP,
gather to the client) and many small objects, each with its figure in extra_info.

Rows: 256 MiB float64 from worker A to a task on worker B (same host: mapped, no copy),
the same at 1 MiB (flat time), gather to the client, forced TCP for random and for
compressible (arange) data, and 10,000 objects of 1 KiB moved to the other worker.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

import frisky

pytestmark = pytest.mark.timeout(600)
MiB = 2**20


def make_random(n: int):
    return np.random.default_rng(0).standard_normal(n)


def make_arange(n: int):
    return np.arange(n, dtype="float64")


def shape(a) -> int:
    return a.shape[0]


def small(i: int) -> bytes:
    return bytes(1024)


def total(*bs) -> int:
    return sum(len(b) for b in bs)


def _move(client, make, mib: int, rounds: int = 3) -> float:
    """Median seconds for a task on worker B to receive worker A's array of ``mib`` MiB."""
    a, b = sorted(client.scheduler_info()["workers"])
    times = []
    for _ in range(rounds):
        x = client.submit(make, mib * MiB // 8, workers=[a], pure=False)
        frisky.wait([x])
        t0 = time.perf_counter()
        assert client.submit(shape, x, workers=[b], pure=False).result() == mib * MiB // 8
        times.append(time.perf_counter() - t0)
        del x
    return statistics.median(times)


def test_shared_memory_move_256mib_and_1mib(benchmark, client2, record):
    out = {}

    def run():
        out["big"] = _move(client2, make_random, 256)
        out["small"] = _move(client2, make_random, 1)

    benchmark.pedantic(run, rounds=1, iterations=1)
    record(gbps_effective_256mib=256 * MiB / out["big"] / 1e9, ms_256mib=out["big"] * 1e3,
           ms_1mib=out["small"] * 1e3)


def test_gather_256mib_to_client(benchmark, client2, record):
    a = sorted(client2.scheduler_info()["workers"])[0]
    times = []

    def run():
        x = client2.submit(make_random, 256 * MiB // 8, workers=[a], pure=False)
        frisky.wait([x])
        t0 = time.perf_counter()
        assert x.result().shape[0] == 256 * MiB // 8
        times.append(time.perf_counter() - t0)

    benchmark.pedantic(run, rounds=3, iterations=1)
    record(gbps_effective=256 * MiB / statistics.median(times) / 1e9)


def test_forced_tcp_random_and_compressible(benchmark, record):
    out = {}

    def run():
        with frisky.LocalCluster(n_workers=2, transport="tcp") as c, c.get_client() as cl:
            # five rounds: on this VM a round now and then pays for fresh pages from the host
            out["random"] = _move(cl, make_random, 256, rounds=5)
            out["arange"] = _move(cl, make_arange, 256, rounds=5)

    benchmark.pedantic(run, rounds=1, iterations=1)
    record(gbps_random=256 * MiB / out["random"] / 1e9, gbps_arange=256 * MiB / out["arange"] / 1e9,
           compressible_over_random=out["random"] / out["arange"])


def test_small_objects_between_workers(benchmark, client2, record):
    a, b = sorted(client2.scheduler_info()["workers"])
    rates = []

    def run():
        xs = client2.map(small, range(10_000), workers=[a], pure=False)
        frisky.wait(xs)
        t0 = time.perf_counter()
        assert client2.submit(total, *xs, workers=[b], pure=False).result() == 10_000 * 1024
        rates.append(10_000 / (time.perf_counter() - t0))

    benchmark.pedantic(run, rounds=3, iterations=1)
    record(objects_per_s=statistics.median(rates))
