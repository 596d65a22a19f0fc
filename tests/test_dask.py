"""Dask collections on Frisky: results equal dask's synchronous scheduler."""

from __future__ import annotations

import operator
import os
import pathlib
import signal
import threading

import pytest

import frisky

dask = pytest.importorskip("dask", reason="dask is not installed (pip install 'frisky[dask]')")
da = pytest.importorskip("dask.array")
np = pytest.importorskip("numpy")


def sync(x):
    return dask.compute(x, scheduler="sync")[0]


def assert_same(x, **kw):
    got = x.compute(**kw)
    want = sync(x)
    if hasattr(want, "shape"):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want))
    else:
        assert got == pytest.approx(want)


def test_client_is_the_default_scheduler_while_open(client):
    x = da.ones((100, 100), chunks=(10, 10))
    ran_before = client.scheduler_info()["counts"]["finished"]
    assert x.sum().compute() == 10_000
    assert client.scheduler_info()["counts"]["finished"] > ran_before
    assert dask.config.get("scheduler") is client


def test_default_scheduler_is_restored_on_close(cluster):
    before = dask.config.get("scheduler", None)
    with frisky.Client(cluster) as c:
        assert dask.config.get("scheduler") is c
    assert dask.config.get("scheduler", None) is before


def test_scheduler_get_and_client_object(client):
    x = da.arange(1000, chunks=100)
    assert dask.compute(x.sum(), scheduler=client.get)[0] == sum(range(1000))
    assert dask.compute(x.sum(), scheduler=client)[0] == sum(range(1000))
    assert client.get({"a": 1, "b": (sum, ["a", "a"])}, "b") == 2
    assert client.get({"a": 1, ("b", 0): (sum, ["a", "a"])}, [["a"], [("b", 0)]]) == [[1], [2]]


@pytest.mark.parametrize("case", [
    "split_every", "rechunk", "matmul", "fancy_index", "map_overlap", "qr", "random",
])
def test_array_workloads_equal_sync(client, case):
    rs = da.random.RandomState(42)
    x = rs.random((400, 300), chunks=(50, 60))
    if case == "split_every":
        expr = x.sum(axis=0, split_every=2) + x.max(split_every=3)
    elif case == "rechunk":
        expr = x.rechunk((130, 70)) * 2
    elif case == "matmul":
        expr = x @ x.T
    elif case == "fancy_index":
        expr = x[[5, 1, 399, 77], :][:, [0, 299, 150]]
    elif case == "map_overlap":
        expr = x.map_overlap(lambda b: b - b.mean(), depth=2, boundary="reflect")
    elif case == "qr":
        tall = rs.random((2000, 20), chunks=(250, 20))
        q, r = da.linalg.qr(tall)
        np.testing.assert_allclose(np.asarray((q @ r).compute()), np.asarray(sync(tall)), atol=1e-8)
        return
    else:
        expr = da.random.RandomState(7).normal(size=(300, 300), chunks=100).mean(axis=1)
    assert_same(expr)


def test_dataframe_workloads_equal_sync(client):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    ts = dask.datasets.timeseries(start="2000-01-01", end="2000-01-11", freq="60s", partition_freq="1d",
                                  seed=1)
    got = ts.groupby("name").x.mean().compute().sort_index()
    want = ts.groupby("name").x.mean().compute(scheduler="sync").sort_index()
    pd.testing.assert_series_equal(got, want)
    agg = ts.groupby("name").agg({"x": "sum", "y": "max"})
    pd.testing.assert_frame_equal(agg.compute().sort_index(), sync(agg).sort_index())
    left = dd.from_pandas(pd.DataFrame({"k": np.arange(100) % 7, "a": np.arange(100)}), npartitions=4)
    right = dd.from_pandas(pd.DataFrame({"k": np.arange(7), "b": np.arange(7) * 10}), npartitions=2)
    merged = left.merge(right, on="k")
    pd.testing.assert_frame_equal(merged.compute().sort_values("a").reset_index(drop=True),
                                  sync(merged).sort_values("a").reset_index(drop=True))
    shuffled = ts.shuffle("id")
    assert len(shuffled.compute()) == len(sync(ts))
    indexed = ts.set_index("id")
    pd.testing.assert_frame_equal(indexed.compute().sort_index(kind="stable").sort_values(["id", "x"]),
                                  sync(indexed).sort_index(kind="stable").sort_values(["id", "x"]))


def test_bag_workloads_equal_sync(client):
    db = pytest.importorskip("dask.bag")
    b = db.from_sequence(range(1000), npartitions=8)
    expr = b.map(lambda x: x * 3).filter(lambda x: x % 2 == 0)
    assert sorted(expr.compute()) == sorted(sync(expr))
    folded = b.foldby(lambda x: x % 5, lambda acc, x: acc + x, 0, lambda a, c: a + c, 0)
    assert sorted(folded.compute()) == sorted(sync(folded))


def test_delayed_diamond_and_wide_tree(client):
    from operator import add

    inc = dask.delayed(lambda x: x + 1)
    a = inc(1)
    diamond = dask.delayed(add)(inc(a), inc(a))
    assert diamond.compute() == 6
    layer = [dask.delayed(add)(i, 1) for i in range(10_000)]
    while len(layer) > 1:
        layer = [dask.delayed(add)(layer[i], layer[i + 1]) if i + 1 < len(layer) else layer[i]
                 for i in range(0, len(layer), 2)]
    assert layer[0].compute() == sum(range(1, 10_001))


def test_persist_then_compute_twice_does_not_recompute(client, tmp_path):
    calls = tmp_path / "calls"

    def count(block):
        with open(calls, "a") as f:
            f.write("x")
        return block + 1

    x = da.zeros((100,), chunks=10).map_blocks(count, dtype=float)
    meta_calls = len(calls.read_text()) if calls.exists() else 0  # dask may call it for meta
    xp = client.persist(x)
    first = float(xp.sum().compute())
    second = float((xp * 2).sum().compute())
    assert (first, second) == (100.0, 200.0)
    assert len(calls.read_text()) - meta_calls == 10  # each block ran once, at persist
    futures = client.compute([xp.sum(), xp.max()])
    assert [float(f.result()) for f in futures] == [100.0, 1.0]


def test_annotations_are_honoured(client, tmp_path):
    workers = client.scheduler_info()["workers"]
    address, info = sorted(workers.items())[0]
    with dask.annotate(workers=[address]):
        pids = [dask.delayed(os.getpid)(dask_key_name=f"pid-{i}") for i in range(6)]
    assert set(dask.compute(*pids)) == {info["pid"]}

    marker = tmp_path / "attempts"

    def flaky():
        n = len(marker.read_text()) if marker.exists() else 0
        marker.write_text("x" * (n + 1))
        if n < 2:
            raise RuntimeError("not yet")
        return "ok"

    with dask.annotate(retries=2):
        value = dask.delayed(flaky, pure=False)()
    assert value.compute() == "ok"


def test_an_error_in_one_chunk_raises_at_compute_with_the_remote_traceback(client):
    def boom(block, block_info=None):
        if block_info[0]["chunk-location"] == (3,):
            raise ValueError("chunk three is bad")
        return block

    x = da.ones(100, chunks=10).map_blocks(boom, dtype=float)
    with pytest.raises(ValueError, match="chunk three is bad") as info:
        x.sum().compute()
    assert "boom" in str(info.value.__cause__)


@pytest.mark.timeout(120)
def test_worker_killed_mid_graph_still_gives_the_right_answer():
    started = threading.Event()
    with frisky.LocalCluster(n_workers=2) as cluster, cluster.get_client() as client:
        pids = [w["pid"] for w in client.scheduler_info()["workers"].values()]

        def slow(block):
            import time

            time.sleep(0.02)
            return block * 2

        x = da.arange(4000, chunks=20).map_blocks(slow, dtype=int)
        future = client.compute(x.sum())

        def kill_when_running():
            deadline = __import__("time").monotonic() + 30
            while __import__("time").monotonic() < deadline:
                if client.scheduler_info()["counts"]["finished"] > 20:
                    break
                started.wait(0.01)
            os.kill(pids[0], signal.SIGKILL)

        t = threading.Thread(target=kill_when_running)
        t.start()
        assert future.result(timeout=100) == 2 * sum(range(4000))
        t.join()


def test_a_client_made_before_dask_is_imported_becomes_its_scheduler(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "late_import.py"
    script.write_text(
        "import sys, frisky\n"
        "with frisky.LocalCluster(n_workers=1, processes=False) as c, c.get_client() as client:\n"
        "    assert 'dask' not in sys.modules, 'the client imported dask'\n"
        "    import dask, dask.array as da\n"
        "    assert dask.config.get('scheduler') is client\n"
        "    print(int(da.ones(10, chunks=2).sum().compute()))\n"
        "assert dask.config.get('scheduler', None) is None\n"
    )
    root = os.path.dirname(os.path.dirname(frisky.__file__))  # this frisky, not another install
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "10"


def test_a_graph_too_large_for_dask_order_streams_depth_first_with_the_same_results(client):
    from operator import add

    from frisky.client.dask import submit_graph

    future = client.submit(lambda: 100)
    dsk = {("leaf", i): (add, i, 1) for i in range(64)}
    dsk["total"] = (sum, [("leaf", i) for i in range(64)])
    dsk["with-future"] = (add, "total", future)
    dsk["literal"] = "total"  # a key as a literal value is an alias
    dsk["data"] = [1, 2, 3]
    keys = ["with-future", "literal", "data", ("leaf", 3)]
    exact = client.get(dsk, keys)
    streamed = submit_graph(client, dsk, keys, order_limit=0)
    assert client.gather([streamed[k] for k in keys]) == exact == [sum(range(1, 65)) + 100,
                                                                  sum(range(1, 65)), [1, 2, 3], 4]


def test_a_delayed_graph_runs_only_what_its_keys_need(client, tmp_path):
    # dask's own cull is skipped for delayed graphs (the walk from the keys culls): a task
    # of the graph that the key does not need must still never run
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    unused = tmp_path / "unused-ran"
    dsk = {"needed": (operator.add, 1, 2), "top": (operator.mul, "needed", 10),
           "unused": (pathlib.Path.write_text, unused, "ran")}
    graph = HighLevelGraph.from_collections("g", dsk, dependencies=())
    assert Delayed("top", graph, layer="g").compute() == 30
    assert dask.compute(Delayed("top", graph, layer="g"), Delayed("needed", graph, layer="g")) == (30, 3)
    assert not unused.exists()


def test_payload_is_the_pickle_of_its_index_and_dependency_references():
    import pickle

    from frisky.client.dask import payload
    from frisky.data.deps import DepRef

    for j in (0, 255, 256, 65535, 65536, 10**6):
        for deps in (None, ["a"], ["('leaf', 1)", "é" * 200, "b"]):
            got = pickle.loads(payload(j, deps))
            assert got[0] == j
            assert all(type(r) is DepRef for r in got[1:])
            assert [r.key for r in got[1:]] == (deps or [])


def test_a_graph_of_odd_keys_runs_right_through_the_plain_batch_path(client):
    # keys of every length class a payload encodes (short, >= 256 bytes, non-ASCII, tuples,
    # ints), each task reading several others: any byte wrong in a payload shows as an
    # error or a wrong sum
    names = ["a", "é" * 200, "k" * 300, ("t", 1), 7, "ü-" + "x" * 254]
    dsk: dict = {}
    for i, k in enumerate(names):
        dsk[k] = i + 1
    total = sum(range(1, len(names) + 1))
    for j in range(300):  # more than the first batch: the plain path of later batches too
        dsk[f"s-{j}"] = (sum, names + [f"s-{j - 1}"] if j else names)
        total_j = total * (j + 1)
    got = client.get(dsk, f"s-{299}")
    assert got == total_j
    assert client.get(dsk, ["é" * 200, ("t", 1), "s-0"]) == [2, 4, total]
