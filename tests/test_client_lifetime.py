"""Futures the caller dropped, clients that closed: callbacks still run, waits end."""

from __future__ import annotations

import threading
import time

import pytest

import frisky
import frisky.errors


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
    while client._holder(key) is not None:
        assert time.monotonic() < deadline, "the result of a dropped future was never released"
        threading.Event().wait(0.05)
    assert not client._held


def test_dask_threaded_scheduler_on_a_frisky_executor():
    da = pytest.importorskip("dask.array", reason="dask is not installed")
    x = da.arange(1000, chunks=100)
    with frisky.FriskyExecutor(2) as ex:
        total = (x + 1).sum().compute(scheduler="threads", pool=ex)
    assert total == sum(range(1, 1001))


def test_result_and_gather_on_a_closed_client_raise_at_once(cluster):
    client = frisky.Client(cluster)
    fut = client.submit(big, 1 << 20, pure=False)
    frisky.wait([fut], timeout=30)
    client.close()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="closed"):  # frisky.errors.ClientClosed
        fut.result(timeout=5)
    with pytest.raises(RuntimeError, match="closed"):
        client.gather([fut])
    assert time.monotonic() - t0 < 2


def _holder(client, key) -> str:
    return client._holder(key)


def _kill_holder(client, key) -> None:
    import os
    import signal

    holder = _holder(client, key)
    pid = client.scheduler_info()["workers"][holder]["pid"]
    os.kill(pid, signal.SIGKILL)


def test_a_value_lost_with_its_worker_is_recomputed_or_reported_without_waiting_out_timeouts():
    # a connect timeout longer than the test allows: the fetch must not wait it out
    with frisky.LocalCluster(n_workers=2, restart_workers=False) as c, \
            frisky.Client(c, timeout=30) as client:
        computed = client.submit(big, 1 << 20, pure=False)
        frisky.wait([computed], timeout=30)
        scattered = client.scatter(b"y" * (1 << 20), workers=[_holder(client, computed.key)])
        assert _holder(client, computed.key) == _holder(client, scattered.key)
        _kill_holder(client, scattered.key)
        t0 = time.monotonic()
        with pytest.raises(frisky.errors.DataLost, match="lost"):
            scattered.result()  # never recomputable: reported, not spun on
        assert len(computed.result()) == 1 << 20  # recomputed on the survivor
        assert time.monotonic() - t0 < 15
