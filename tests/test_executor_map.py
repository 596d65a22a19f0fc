"""``FriskyExecutor.map``: results by position with no future per call, across batches,
failures, early exits, cancels and large results; and the cluster forgets every call."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time

import pytest

import frisky


def inc(x):
    return x + 1


def fail_at(x, bad):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def slow_mark(x, path, delay):
    time.sleep(delay)
    with open(os.path.join(path, str(x)), "w"):
        pass
    return x


def make_big(n):
    import numpy as np

    return np.arange(n, dtype="float64")


@pytest.fixture(params=[True, False], ids=["processes", "threads"])
def executor(request):
    with frisky.FriskyExecutor(2, processes=request.param) as ex:
        yield ex


def until(predicate, timeout: float = 20.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.01)
    return True


def forgotten(ex) -> bool:
    """Every call of every map is done and released on the scheduler."""
    return not ex.client._jobs and not ex.client.scheduler_info()["tasks"]


def test_results_in_order_across_batches(executor):
    n = 25_000  # a first small batch, full batches, and a partial one
    assert list(executor.map(inc, range(n))) == list(range(1, n + 1))
    assert list(executor.map(pow, range(50), [2] * 50, chunksize=7)) == [i * i for i in range(50)]
    assert until(lambda: forgotten(executor))


def test_failure_in_the_middle_raises_there_with_remote_traceback(executor):
    it = executor.map(fail_at, range(3000), [1700] * 3000)
    got = [next(it) for _ in range(1700)]
    assert got == list(range(1700))
    with pytest.raises(ValueError, match="bad item 1700") as info:
        next(it)
    assert "fail_at" in str(getattr(info.value, "__cause__", "")) + "".join(getattr(info.value, "__notes__", []))
    with pytest.raises(StopIteration):
        next(it)
    assert until(lambda: forgotten(executor))


def test_early_exit_cancels_calls_not_started(tmp_path):
    with frisky.FriskyExecutor(1) as ex:
        it = ex.map(slow_mark, range(100), [str(tmp_path)] * 100, [0.02] * 100)
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        it.close()
        assert until(lambda: forgotten(ex))
        ran = len(os.listdir(tmp_path))
        assert 3 <= ran < 100
        assert list(ex.map(inc, range(10))) == list(range(1, 11))  # the executor works on


def test_dropped_unstarted_iterator_runs_every_call(tmp_path):
    with frisky.FriskyExecutor(2) as ex:
        ex.map(slow_mark, range(20), [str(tmp_path)] * 20, [0.0] * 20)
        assert until(lambda: forgotten(ex))
        assert len(os.listdir(tmp_path)) == 20


def test_large_results_are_fetched_from_workers(executor):
    arrays = list(executor.map(make_big, [300_000] * 3))
    assert [a[-1] for a in arrays] == [299_999.0] * 3
    del arrays
    assert until(lambda: forgotten(executor))


def test_large_result_read_as_its_key_is_released(executor):
    # the 4096th result is the one whose reading releases the keys read so far
    sizes = [1] * 4095 + [300_000] + [1] * 10
    for i, a in enumerate(executor.map(make_big, sizes)):
        assert a[-1] == sizes[i] - 1
    assert until(lambda: forgotten(executor))


def test_timeout_raises_and_cancels_the_rest(tmp_path):
    with frisky.FriskyExecutor(1) as ex:
        it = ex.map(slow_mark, range(50), [str(tmp_path)] * 50, [0.1] * 50, timeout=0.5)
        with pytest.raises(TimeoutError):
            for _ in it:
                pass
        assert until(lambda: forgotten(ex))
        assert len(os.listdir(tmp_path)) < 50


def test_shutdown_cancel_futures_cancels_queued_calls(tmp_path):
    ex = frisky.FriskyExecutor(1)
    it = ex.map(slow_mark, range(50), [str(tmp_path)] * 50, [0.05] * 50)
    assert next(it) == 0
    ex.shutdown(wait=True, cancel_futures=True)
    with pytest.raises(concurrent.futures.CancelledError):
        for _ in it:
            pass
    assert len(os.listdir(tmp_path)) < 50


def test_futures_as_arguments(executor):
    f = executor.submit(inc, 1)
    assert list(executor.map(inc, [f, f, 5])) == [3, 3, 6]


def test_unpicklable_item_raises_at_the_call(executor):
    if not executor.client.codec.local:
        with pytest.raises(Exception, match="pickle"):
            executor.map(inc, [1, 2, threading.Lock()])
    assert until(lambda: forgotten(executor))
