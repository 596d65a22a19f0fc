"""Benchmarks for Frisky (pytest-benchmark). Run them with::

    python -m pytest bench/ --benchmark-only

Files here are named ``bench_*.py``; the hook below collects them (pytest's own
pattern, ``test_*.py``, would skip them). Each benchmark stores its headline figures
(tasks/s, ms, bytes/task) in ``benchmark.extra_info``, measured around exactly the
region that matters; pytest-benchmark's own columns are the time of one whole round.
"""

from __future__ import annotations

import os
import sys

import pytest

import frisky

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    # worker processes import bench modules by this path (the cluster passes sys.path on)
    sys.path.insert(0, BENCH_DIR)


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` as test modules. Files named on the command line are
    collected by pytest itself, so they are left alone here (no doubles)."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def client2():
    """A LocalCluster of 2 worker processes (1 thread each) shared by the benchmarks;
    its start-up is outside every timed region."""
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1) as cluster:
        with cluster.get_client() as client:
            yield client


@pytest.fixture
def record(benchmark):
    """``record(name=value, ...)``: store figures in ``benchmark.extra_info`` and print
    them (visible with ``-s``)."""

    def _record(**figures):
        for k, v in figures.items():
            benchmark.extra_info[k] = round(v, 3) if isinstance(v, float) else v
        sys.stdout.write(f"\n  {benchmark.name}: "
                         + ", ".join(f"{k}={benchmark.extra_info[k]}" for k in figures) + "\n")

    return _record

