"""The core API against real worker processes and sockets."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import signal
import threading
import time

import pytest

import frisky


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def total(xs):
    return sum(xs)


def total_dict(d):
    return sum(d.values())


def slow_inc(x, delay=0.05):
    time.sleep(delay)
    return x + 1


def boom(x):
    raise ValueError(f"boom {x}")


def make_big(n):
    import numpy as np

    return np.arange(n, dtype="float64")


def array_sum(a):
    return float(a.sum())


def pid_of(*_):
    return os.getpid()


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)


def flaky(path, fail_times):
    # fails the first `fail_times` calls, counted in a file
    n = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(n + 1))
    if n < fail_times:
        raise RuntimeError(f"attempt {n} fails")
    return n


def worker_pids(client):
    return {a: w["pid"] for a, w in client.scheduler_info()["workers"].items()}


def test_submit_and_result(client):
    assert client.submit(inc, 1).result(timeout=10) == 2
    assert client.submit(add, 1, b=2).result(timeout=10) == 3


def test_map_gather_in_order(client):
    futs = client.map(inc, range(1000))
    assert client.gather(futs) == list(range(1, 1001))
    assert client.map(add, [1, 2], [10, 20]) and client.gather(client.map(add, [1, 2], [10, 20])) == [11, 22]


def test_pure_keys(client):
    a, b = client.submit(inc, 5), client.submit(inc, 5)
    assert a.key == b.key and a is b
    c, d = client.submit(inc, 5, pure=False), client.submit(inc, 5, pure=False)
    assert c.key != d.key
    assert client.submit(inc, 1, key="mine").key == "mine"


def test_futures_as_arguments_are_dependencies(client):
    xs = client.map(inc, range(10))
    assert client.submit(total, xs).result(timeout=10) == 55
    d = {"a": client.submit(inc, 1), "b": client.submit(inc, 2)}
    assert client.submit(total_dict, d).result(timeout=10) == 5
    # a tree reduction
    layer = client.map(inc, range(64))
    while len(layer) > 1:
        layer = [client.submit(add, layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    assert layer[0].result(timeout=10) == sum(range(1, 65))


def test_data_locality_and_worker_to_worker(client):
    pids = worker_pids(client)
    a, b = sorted(pids)
    big = client.submit(make_big, 1_000_000, workers=[a])  # 8 MB: stays on worker a
    # without restrictions the dependent runs where its input is
    assert client.submit(pid_of, big).result(timeout=10) == pids[a]
    # forced elsewhere, the input moves worker to worker
    assert client.submit(array_sum, big, workers=[b]).result(timeout=10) == float(sum(range(1_000_000)))
    assert client.submit(pid_of, big, workers=[b], pure=False).result(timeout=10) == pids[b]
    assert big.result(timeout=10)[-1] == 999_999.0


def test_exception_carries_remote_traceback(client):
    fut = client.submit(boom, 7)
    with pytest.raises(ValueError, match="boom 7") as info:
        fut.result(timeout=10)
    assert "boom" in str(info.value.__cause__)
    assert isinstance(fut.exception(), ValueError)
    # dependents of an erred task err with the same exception
    dep = client.submit(inc, fut)
    with pytest.raises(ValueError, match="boom 7"):
        dep.result(timeout=10)


def test_cancel_pending(client):
    blockers = [client.submit(slow_inc, i, 0.5, pure=False) for i in range(4)]
    late = client.submit(slow_inc, 100, 0.5, pure=False)
    assert late.cancel()
    assert late.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        late.result()
    assert client.gather(blockers) == [1, 2, 3, 4]


def test_as_completed_and_wait(client):
    futs = client.map(slow_inc, range(6), [0.01] * 6)
    assert sorted(f.result() for f in frisky.as_completed(futs)) == list(range(1, 7))
    assert sorted(f.result() for f in concurrent.futures.as_completed(futs, timeout=10)) == list(range(1, 7))
    done, not_done = frisky.wait(futs, timeout=10)
    assert len(done) == 6 and not not_done
    done, _ = concurrent.futures.wait(futs, timeout=10, return_when=concurrent.futures.FIRST_COMPLETED)
    assert done


def test_as_completed_accepts_added_futures(client):
    ac = frisky.as_completed([client.submit(inc, 1)])
    seen = []
    for f in ac:
        seen.append(f.result())
        if len(seen) < 3:
            ac.add(client.submit(inc, seen[-1]))
    assert seen == [2, 3, 4]


def test_retries(client, tmp_path):
    path = str(tmp_path / "count")
    assert client.submit(flaky, path, 2, retries=2, pure=False).result(timeout=10) == 2
    path2 = str(tmp_path / "count2")
    with pytest.raises(RuntimeError, match="attempt 1 fails"):
        client.submit(flaky, path2, 5, retries=1, pure=False).result(timeout=10)


def test_unpicklable_input_raises_at_submit(client):
    with pytest.raises(frisky.SerializationError, match="serialize"):
        client.submit(inc, threading.Lock())
    with pytest.raises(TypeError):
        client.submit(42)


def test_scheduler_info_and_restrictions(client):
    info = client.scheduler_info()
    assert len(info["workers"]) == 2
    for addr, w in info["workers"].items():
        assert {"name", "pid", "nthreads", "memory_limit"} <= set(w)
        assert client.submit(pid_of, 0, workers=[addr], pure=False).result(timeout=10) == w["pid"]


def test_scatter(client):
    import numpy as np

    x = client.scatter(np.arange(1_000_000, dtype="float64"))
    assert client.submit(array_sum, x).result(timeout=10) == float(sum(range(1_000_000)))
    small = client.scatter([1, 2, 3])
    assert client.gather(small) == [1, 2, 3]
    d = client.scatter({"a": 1, "b": 2})
    assert client.submit(add, d["a"], d["b"]).result(timeout=10) == 3


def test_release_forgets_keys(client):
    futs = client.map(inc, range(100), pure=False)
    client.gather(futs)
    del futs
    gc.collect()
    # the scheduler forgets the keys once the client tells it; ask until it has
    deadline = time.monotonic() + 10
    while client.scheduler_info()["tasks"].get("memory", 0) and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert client.scheduler_info()["tasks"].get("memory", 0) == 0


def test_dropped_single_submits_are_forgotten(client):
    # each dropped future's release rides with the next submission; the last one, with
    # nothing after it, still reaches the scheduler on its own
    for i in range(200):
        assert client.submit(inc, i, pure=False).result(timeout=10) == i + 1
    gc.collect()
    deadline = time.monotonic() + 10
    while client.scheduler_info()["tasks"].get("memory", 0) and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert client.scheduler_info()["tasks"].get("memory", 0) == 0


def test_submit_after_close_raises(cluster):
    c = frisky.Client(cluster)
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.submit(inc, 1)


def test_no_scheduler_times_out():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="no Frisky scheduler"):
        frisky.Client("tcp://127.0.0.1:1", timeout=0.5)
    assert time.monotonic() - t0 < 5
    with pytest.raises(ValueError):
        frisky.Client("not-an-address")


def test_threads_cluster_passes_objects_by_reference():
    lock = threading.Lock()  # not picklable: fine in-process

    def same(x):
        return x

    with frisky.LocalCluster(n_workers=2, processes=False) as c, c.get_client() as cl:
        assert cl.submit(same, lock).result(timeout=10) is lock
        assert cl.gather(cl.map(inc, range(100))) == list(range(1, 101))
        with pytest.raises(ValueError, match="boom"):
            cl.submit(boom, 1).result(timeout=10)


def test_default_workers_and_threads_are_daskish():
    cores = os.cpu_count() or 1
    with frisky.LocalCluster(processes=False) as c, c.get_client() as cl:
        # threads share one GIL: one worker with a thread per core, as dask does
        assert [w["nthreads"] for w in cl.scheduler_info()["workers"].values()] == [cores]
        assert cl.gather(cl.map(inc, range(20))) == list(range(1, 21))
    with frisky.LocalCluster(n_workers=2, processes=False) as c, c.get_client() as cl:
        assert [w["nthreads"] for w in cl.scheduler_info()["workers"].values()] == [1, 1]
    with frisky.LocalCluster(threads_per_worker=2, processes=False) as c, c.get_client() as cl:
        assert [w["nthreads"] for w in cl.scheduler_info()["workers"].values()] == [2] * cores


def test_worker_kill_recovers_with_correct_results():
    with frisky.LocalCluster(n_workers=2) as c, c.get_client() as cl:
        futs = cl.map(slow_inc, range(40), [0.05] * 40)
        big = cl.submit(make_big, 100_000)
        next(iter(frisky.as_completed(futs)))  # work is under way
        holder = cl.scheduler_info()["workers"]
        victim = next(iter(holder.values()))["pid"]
        os.kill(victim, signal.SIGKILL)
        assert cl.gather(futs) == list(range(1, 41))
        assert big.result(timeout=20)[-1] == 99_999.0
        cl.wait_for_workers(2, timeout=20)  # the cluster replaced the dead worker


def test_lost_result_is_recomputed():
    with frisky.LocalCluster(n_workers=2) as c, c.get_client() as cl:
        pids = worker_pids(cl)
        a = sorted(pids)[0]
        big = cl.submit(make_big, 200_000, workers=[a])
        big.result(timeout=10)
        os.kill(pids[a], signal.SIGKILL)
        # the dependent needs big's data, which died with worker a: it is recomputed
        assert cl.submit(array_sum, big).result(timeout=30) == float(sum(range(200_000)))


def test_task_that_kills_workers_errs_with_killed_worker():
    with frisky.LocalCluster(n_workers=2) as c, c.get_client() as cl:
        with pytest.raises(frisky.KilledWorker):
            cl.submit(kill_myself).result(timeout=60)
        assert cl.submit(inc, 1).result(timeout=30) == 2  # the cluster still works


def test_executor_basics():
    with pytest.raises(ValueError):
        frisky.FriskyExecutor(max_workers=0)
    with frisky.FriskyExecutor(max_workers=2) as ex:
        assert list(ex.map(inc, range(100))) == list(range(1, 101))
        assert list(ex.map(add, range(10), range(10), chunksize=3)) == list(range(0, 20, 2))
        f = ex.submit(slow_inc, 1, delay=0.01)
        assert isinstance(f, concurrent.futures.Future) and f.result(timeout=10) == 2
    with pytest.raises(RuntimeError):
        ex.submit(inc, 1)


def test_big_tree_reduction_releases_never_overtake_submissions(any_client):
    # dropping each layer's futures right after submitting the next layer must never
    # make the scheduler forget a dependency before its dependent arrives
    n = 20_000
    layer = any_client.map(inc, range(n))
    while len(layer) > 1:
        nxt = [any_client.submit(add, layer[i], layer[i + 1]) for i in range(0, len(layer) - 1, 2)]
        layer = nxt + ([layer[-1]] if len(layer) % 2 else [])
    assert layer[0].result(timeout=60) == n * (n + 1) // 2


def test_many_single_submits_batch_correctly(any_client):
    futs = [any_client.submit(add, i, i, pure=False) for i in range(5000)]
    bad = any_client.submit(boom, 1, pure=False)
    more = [any_client.submit(inc, i, pure=False) for i in range(100)]
    for f in more[::2]:
        f.cancel()
    assert any_client.gather(futs) == [2 * i for i in range(5000)]
    assert isinstance(bad.exception(timeout=10), ValueError)
    assert [f.result(timeout=10) for f in more[1::2]] == [i + 1 for i in range(1, 100, 2)]
