"""Futures the caller dropped, clients that closed: callbacks still run, waits end."""

from __future__ import annotations

import threading
import time

import pytest

import frisky
from frisky.errors import SchedulerGone


def slow_one() -> int:
    time.sleep(0.2)
    return 1


def big(n: int) -> bytes:
    return b"x" * n  # too large to ride inline: stays on the worker


def _callbacks_after_drop(submit, n: int = 3) -> int:
    got: list = []
    all_in = threading.Event()

    def cb(fut):
        got.append(fut.result())
        if len(got) == n:
            all_in.set()

    for _ in range(n):
        fut = submit()
        fut.add_done_callback(cb)
        del fut
    all_in.wait(30)
    return len(got)


def test_dropped_executor_futures_keep_their_callbacks():
    with frisky.FriskyExecutor(2) as ex:
        assert _callbacks_after_drop(lambda: ex.submit(slow_one)) == 3


def test_dropped_client_futures_keep_their_callbacks_and_finished_ones_are_released(client):
    assert _callbacks_after_drop(lambda: client.submit(slow_one, pure=False)) == 3
    # a dropped finished future releases its result on the cluster
    fut = client.submit(big, 1 << 20, pure=False)
    key = fut.key
    fut.result()
    del fut
    deadline = time.monotonic() + 20
    while client._query("where", [key])[0] is not None:
        assert time.monotonic() < deadline, "the result of a dropped future was never released"
        threading.Event().wait(0.05)
    assert not client._held


def test_dask_threaded_scheduler_on_a_frisky_executor():
    da = pytest.importorskip("dask.array", reason="dask is not installed")
    x = da.arange(1000, chunks=100)
    with frisky.FriskyExecutor(2) as ex:
        total = (x + 1).sum().compute(scheduler="threads", pool=ex)
    assert total == sum(range(1, 1001))
