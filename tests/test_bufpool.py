"""The receive-buffer pool: a buffer is reused only once every value built on it is gone."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

import frisky
from frisky.data import bufpool

pytestmark = pytest.mark.timeout(60)
MiB = 1 << 20


def received(pool: bufpool.BufferPool, value: np.ndarray) -> np.ndarray:
    """``value`` rebuilt the way a transfer rebuilds it: pickle 5, its buffer in a pool buffer."""
    bufs = []
    stream = pickle.dumps(value, protocol=5, buffer_callback=bufs.append)
    raw = bufs[0].raw()
    out = pool.take(raw.nbytes)
    out[:] = raw
    return pickle.loads(stream, buffers=[out])


def test_buffer_returns_only_when_the_last_view_dies():
    pool = bufpool.BufferPool(1 << 30)
    a = received(pool, np.arange(8 * MiB // 8, dtype="f8"))
    part = a[100:200]
    del a
    gc.collect()
    assert pool.idle_bytes == 0  # a slice still holds it
    del part
    assert pool.idle_bytes == 8 * MiB


def test_reused_buffer_never_overwrites_a_live_value():
    pool = bufpool.BufferPool(1 << 30)
    first = received(pool, np.full(8 * MiB // 8, 1.0))
    second = received(pool, np.full(8 * MiB // 8, 2.0))  # first is alive: a new buffer
    assert pool.reused == 0
    assert (first == 1.0).all() and (second == 2.0).all()
    del first
    third = received(pool, np.full(8 * MiB // 8, 3.0))  # takes first's buffer
    assert pool.reused == 1
    assert (second == 2.0).all() and (third == 3.0).all()


def test_sizes_small_buffers_limit_and_clear():
    pool = bufpool.BufferPool(10 * MiB)
    small = pool.take(1 << 16)
    assert len(small) == 1 << 16
    del small
    assert pool.idle_bytes == 0  # below MIN_SIZE: plain memory, never pooled
    big = pool.take(8 * MiB)
    del big
    assert pool.idle_bytes == 8 * MiB
    too_big = pool.take(32 * MiB)  # no idle buffer fits: a new one
    assert pool.reused == 0 and len(too_big) == 32 * MiB
    del too_big
    assert pool.idle_bytes == 8 * MiB  # over the limit: unmapped, not kept
    much_smaller = pool.take(5 * MiB)  # 8 MiB would waste over a quarter: not reused
    assert pool.reused == 0
    del much_smaller
    assert pool.clear() == 8 * MiB and pool.idle_bytes == 0
    disabled = bufpool.BufferPool(0)
    disabled.take(8 * MiB)
    assert disabled.idle_bytes == 0 and disabled.reused == 0


def test_memory_pressure_gives_idle_buffers_back_before_any_value():
    from frisky.worker.memory import MemoryManager
    from frisky.worker.store import Store

    pool = bufpool.pool
    old = pool.limit
    pool.limit = 1 << 30
    try:
        buf = pool.take(8 * MiB)
        del buf
        assert pool.idle_bytes == 8 * MiB
        # a worker with nothing stored, whose RSS is over any tiny limit
        MemoryManager(1, name="t", store=Store(), fetched=Store(), shared={}, registry=None,
                      wake=lambda: None).check()
        assert pool.idle_bytes == 0
    finally:
        pool.limit = old
        pool.clear()


def make_arange(n, start=0):
    return np.arange(start, start + n, dtype="f8")


def identity(x):
    return x


def total(a):
    return float(a.sum())


def pool_reuses():
    return bufpool.pool.reused


def test_repeated_transfers_over_tcp_reuse_buffers_and_keep_values_intact():
    n = 16 * MiB // 8
    expected = [float(np.arange(i, i + n, dtype="f8").sum()) for i in range(4)]
    with frisky.LocalCluster(n_workers=2, transport="tcp") as c, c.get_client() as cl:
        a, b = sorted(cl.scheduler_info()["workers"])
        # a value b keeps (its task returns the received array itself) pins its buffer
        kept = cl.submit(identity, cl.submit(make_arange, n, 0, workers=[a], pure=False), workers=[b], pure=False)
        frisky.wait([kept])
        for i in range(1, 4):
            x = cl.submit(make_arange, n, i, workers=[a], pure=False)
            assert cl.submit(total, x, workers=[b], pure=False).result(timeout=30) == expected[i]
            del x
        assert cl.submit(total, kept, workers=[b], pure=False).result(timeout=30) == expected[0]
        assert cl.submit(pool_reuses, workers=[b], pure=False).result(timeout=30) >= 1
