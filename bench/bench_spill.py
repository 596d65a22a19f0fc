"""Spill throughput: ``pytest bench/bench_spill.py --benchmark-only``.

Each benchmark spills (or reads back) 6 x 64 MiB per round and records GB/s, plus the raw
O_DIRECT write/read rate of the same directory measured just before it, in ``extra_info``
(the disk of a shared machine drifts, so compare ratios, not absolute times).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time

import numpy as np
import pytest

from frisky.spill import SpillFile
from frisky.spill.sweep import spill_root

VALUE = 64 << 20
COUNT = 6
TOTAL = VALUE * COUNT
BLOCK = 4 << 20
ROUNDS = 3  # plus one warm-up: ~20 s for the whole file


def _raw_rates(directory: str, nbytes: int = 256 << 20) -> tuple[float, float]:
    """GB/s of a dd-like O_DIRECT write then read of ``nbytes`` in 4 MiB blocks."""
    buf = mmap.mmap(-1, BLOCK)
    buf.write(os.urandom(BLOCK))
    fd, path = tempfile.mkstemp(prefix="frisky-bench-raw-", dir=directory)
    os.close(fd)
    try:
        with memoryview(buf) as mv:
            fd = os.open(path, os.O_RDWR | os.O_DIRECT)
            try:
                t0 = time.perf_counter()
                for off in range(0, nbytes, BLOCK):
                    os.pwrite(fd, mv, off)
                write = nbytes / (time.perf_counter() - t0) / 1e9
                t0 = time.perf_counter()
                for off in range(0, nbytes, BLOCK):
                    os.preadv(fd, [mv], off)
                read = nbytes / (time.perf_counter() - t0) / 1e9
            finally:
                os.close(fd)
    finally:
        os.unlink(path)
    return write, read


@pytest.fixture
def raw():
    """Measured right before each benchmark: the disk drifts within minutes."""
    return _raw_rates(spill_root())


@pytest.fixture(scope="module")
def incompressible():
    return np.random.default_rng(0).random(VALUE // 8)


@pytest.fixture(scope="module")
def compressible():
    return np.arange(VALUE // 8, dtype=np.float64)


def _record(benchmark, raw_rate: float, label: str, sf: SpillFile) -> None:
    gbps = TOTAL / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update({
        "GB/s": round(gbps, 3),
        f"raw_{label}_GB/s": round(raw_rate, 3),
        f"ratio_vs_raw_{label}": round(gbps / raw_rate, 3),
        "direct": sf.stats["direct"],
    })


def _spill_write(benchmark, raw, data, name):
    with SpillFile(name=name) as sf:
        def setup():
            for k in list(sf.keys()):
                sf.delete(k)

        def run():
            for i in range(COUNT):
                sf.put(i, [data])
            sf.flush(60)

        benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
        _record(benchmark, raw[0], "write", sf)
        st = sf.stats
        benchmark.extra_info["stored/original"] = round(st["file_size"] / TOTAL, 4)


def test_spill_write_incompressible(benchmark, raw, incompressible):
    _spill_write(benchmark, raw, incompressible, "bench-rand")


def test_spill_write_incompressible_page_aligned(benchmark, raw, incompressible):
    # Shared-memory segments are page aligned: written in place, without the staging copy.
    segment = mmap.mmap(-1, incompressible.nbytes)
    aligned = np.frombuffer(segment, dtype=incompressible.dtype)
    aligned[:] = incompressible
    _spill_write(benchmark, raw, aligned, "bench-aligned")


def test_spill_write_compressible(benchmark, raw, compressible):
    _spill_write(benchmark, raw, compressible, "bench-arange")


@pytest.mark.parametrize("kind", ["incompressible", "compressible"])
def test_unspill_read(benchmark, raw, kind, request):
    data = request.getfixturevalue(kind)
    with SpillFile(name="bench-read") as sf:
        for i in range(COUNT):
            sf.put(i, [data])
        sf.flush(60)

        def run():
            for i in range(COUNT):
                sf.get(i)

        benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
        _record(benchmark, raw[1], "read", sf)
