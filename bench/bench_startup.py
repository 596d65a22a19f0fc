"""Start-up costs: in-process and 2-process LocalCluster (start + 10 tasks + stop), and
``import frisky`` (``-X importtime``, and wall time against an empty interpreter)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import pytest

import frisky

# pyproject's 60 s test timeout is too short for a few rounds on a busy machine
pytestmark = pytest.mark.timeout(600)


def inc(x):
    return x + 1


def start_run_stop(**cluster_kwargs) -> float:
    """Seconds to start a LocalCluster, run 10 tasks, gather them and stop it."""
    t0 = time.perf_counter()
    with frisky.LocalCluster(**cluster_kwargs) as cluster, cluster.get_client() as client:
        res = client.gather(client.map(inc, range(10)))
    dt = time.perf_counter() - t0
    assert res == list(range(1, 11))
    return dt


def test_startup_threads_warm(benchmark, record):
    """Row 8: warm ``LocalCluster(processes=False)`` start + 10 tasks + gather + stop
    (warm: after one untimed start in this process)."""
    times = []
    benchmark.pedantic(lambda: times.append(start_run_stop(processes=False)),
                       rounds=9, warmup_rounds=1, iterations=1)
    times = times[1:]
    record(median_ms=statistics.median(times) * 1e3, best_ms=min(times) * 1e3)


def test_startup_processes(benchmark, record):
    """Row 9: ``LocalCluster(n_workers=2)`` (worker processes) start + 10 tasks + stop."""
    times = []
    benchmark.pedantic(lambda: times.append(start_run_stop(n_workers=2)), rounds=5, iterations=1)
    record(median_ms=statistics.median(times) * 1e3, best_ms=min(times) * 1e3)


def importtime_us(module: str) -> int:
    """Cumulative microseconds of ``module`` in ``python -X importtime -c 'import module'``."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         capture_output=True, text=True, timeout=60, check=True)
    # lines: "import time:  self [us] | cumulative | imported package"
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == module:
            return int(parts[1])
    raise AssertionError(f"no importtime line for {module!r} in:\n{out.stderr}")


def wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    return time.perf_counter() - t0


def test_import_time(benchmark, record):
    """Row 10: ``import frisky``: the cumulative µs of the ``frisky`` line of
    ``python -X importtime``, and the wall time of ``python -c "import frisky"`` minus
    that of ``python -c pass`` (each the median of several runs)."""
    cumulative = []
    with_frisky = []
    bare = []

    def run():
        cumulative.append(importtime_us("frisky"))
        bare.append(wall("pass"))
        with_frisky.append(wall("import frisky"))

    benchmark.pedantic(run, rounds=9, warmup_rounds=1, iterations=1)
    cumulative, bare, with_frisky = cumulative[1:], bare[1:], with_frisky[1:]
    record(importtime_ms=statistics.median(cumulative) / 1e3,
           wall_delta_ms=(statistics.median(with_frisky) - statistics.median(bare)) * 1e3,
           python_pass_ms=statistics.median(bare) * 1e3)
