"""Dask collections on Frisky, dask's threaded scheduler and dask.distributed, side by side.

The rows of ``compare_peers.py``'s dask workloads (run them with
``python scripts/compare_peers.py --only "dask array sum"`` and so on):

- ``dask array sum``: ``da.ones((20_000, 20_000), chunks=(200, 200)).sum().compute()``,
  10,000 chunks -> ms.
- ``dask array x+x.T``: ``x = da.random.random((20_000, 20_000), chunks=(1_000, 1_000))``,
  ``(x + x.T).mean().compute()`` -> ms (chunks move between workers).
- ``dask dataframe groupby``: ``dask.datasets.timeseries()`` (30 daily partitions),
  ``groupby("name").x.mean().compute()`` -> ms.
- ``dask delayed tree``: a pairwise tree of ``add`` over N leaves (2N - 1 tasks) built as
  one dask.delayed object -> tasks/s end to end, and the time from ``compute()`` to the
  first task running (stamped by the first leaf itself, on its worker).

Frisky and dask.distributed run 2 worker processes with a thread each; the threaded
scheduler runs in the calling process with its default thread pool.
"""

from __future__ import annotations

import os
import tempfile
import time
from operator import add

WORKLOADS = ["dask array sum", "dask array x+x.T", "dask dataframe groupby", "dask delayed tree"]


def stamp_leaf(i, path):
    """A tree's leaf: ``i + 1``; the first leaf also writes when it ran."""
    if i == 0:
        with open(path, "w") as f:
            f.write(repr(time.time()))
    return i + 1


def array_sum(scale: int):
    import dask.array as da

    n = 20_000 // scale
    return da.ones((n, n), chunks=(200, 200)).sum(), float(n * n)


def array_transpose(scale: int):
    import dask.array as da

    n = 20_000 // scale
    x = da.random.random((n, n), chunks=(1_000, 1_000))
    return (x + x.T).mean(), None


def frame_groupby(scale: int):
    import dask

    end = "2000-01-31" if scale == 1 else "2000-01-09"
    ts = dask.datasets.timeseries(start="2000-01-01", end=end, partition_freq="1D", seed=1)
    return ts.groupby("name").x.mean(), None


_trees = iter(range(1, 1 << 30))


def delayed_tree(n_leaves: int, path: str):
    """One dask.delayed object whose graph is a pairwise tree over ``n_leaves`` leaves
    (keys new at each call, so nothing is reused from an earlier run)."""
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    leaf, node = f"leaf-{next(_trees)}", f"node-{next(_trees)}"
    dsk: dict = {(leaf, i): (stamp_leaf, i, path) for i in range(n_leaves)}
    layer = [(leaf, i) for i in range(n_leaves)]
    level = 0
    while len(layer) > 1:
        level += 1
        nxt = [(node, level, i) for i in range(0, len(layer) - 1, 2)]
        for k, i in zip(nxt, range(0, len(layer) - 1, 2)):
            dsk[k] = (add, layer[i], layer[i + 1])
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    graph = HighLevelGraph.from_collections("tree", dsk, dependencies=())
    return Delayed(layer[0], graph, layer="tree"), len(dsk), n_leaves * (n_leaves + 1) // 2


BUILDERS = {"dask array sum": array_sum, "dask array x+x.T": array_transpose,
            "dask dataframe groupby": frame_groupby}
HOW = {
    "dask array sum": "da.ones((20k, 20k), chunks=(200, 200)).sum().compute(), 10,000 chunks",
    "dask array x+x.T": "x = da.random.random((20k, 20k), chunks=1k); (x + x.T).mean().compute()",
    "dask dataframe groupby": "dask.datasets.timeseries() (30 partitions) groupby('name').x.mean()",
}


def run(res, cfg, timed, log) -> None:
    """Add every wanted dask workload's rows to ``res`` (a compare_peers ``Results``)."""
    wanted = [w for w in WORKLOADS if cfg.wants(w)]
    if not wanted:
        return
    try:
        import dask  # noqa: F401
    except ImportError:
        for w in wanted:
            res.skip(w, "Frisky", "dask is not installed (pip install 'frisky[dask]')")
        return
    scale = 2 if cfg.quick else 1
    repeats = cfg.repeats
    tree_leaves = 50_000 if cfg.quick else 500_000
    dask_tree_leaves = 2_000 if cfg.quick else 10_000
    with tempfile.TemporaryDirectory(prefix="compare-peers-dask-") as scratch:
        stamp = os.path.join(scratch, "first-leaf")
        _frisky(res, wanted, scale, repeats, tree_leaves, stamp, timed, log)
        _threads(res, wanted, scale, repeats, timed)
        _distributed(res, wanted, scale, max(1, repeats - 1), dask_tree_leaves, stamp, scratch, timed, log)


def _check(value, want) -> None:
    if want is not None:
        assert abs(float(value) - want) < 1e-6 * max(1.0, abs(want)), (value, want)


def _collections(res, wanted, system, scale, repeats, timed, compute, ref=False, note="") -> None:
    for w in wanted:
        if w not in BUILDERS:
            continue
        expr, want = BUILDERS[w](scale)

        def once(expr=expr, want=want):
            _check(compute(expr), want)

        once()  # warm: workers import dask's modules once, untimed

        res.add(w, system, HOW[w] + ("" if scale == 1 else f" (1/{scale} scale)"), None,
                timed(once, repeats), kind="ms", ref=ref, note=note)


def _tree(res, system, client_compute, n_leaves, stamp, repeats, timed, ref=False, note="") -> None:
    small, _, small_want = delayed_tree(100, stamp)
    assert client_compute(small) == small_want  # warm: workers import dask's modules, untimed
    root, n_tasks, want = delayed_tree(n_leaves, stamp)
    firsts: list[float] = []

    def once():
        if os.path.exists(stamp):
            os.unlink(stamp)
        t0 = time.time()
        assert client_compute(root) == want
        with open(stamp) as f:
            firsts.append(float(f.read()) - t0)

    def settle():  # the scheduler forgets the last run's tasks before the next is timed
        assert client_compute(small) == small_want

    times = timed(once, repeats, settle)
    firsts.sort()
    first = firsts[len(firsts) // 2]
    res.add("dask delayed tree", system, f"pairwise tree of add over {n_leaves:,} leaves, one Delayed",
            n_tasks, times, kind="rate", per=n_tasks, ref=ref,
            note=f"first task {first * 1e3:,.0f} ms after compute(){note}")


def _frisky(res, wanted, scale, repeats, tree_leaves, stamp, timed, log) -> None:
    import frisky

    with frisky.LocalCluster(n_workers=2, threads_per_worker=1) as cluster, cluster.get_client() as client:
        client.submit(stamp_leaf, 1, stamp).result()  # workers import this module, untimed
        _collections(res, wanted, "Frisky", scale, repeats, timed, lambda x: x.compute(), ref=True)
        if "dask delayed tree" in wanted:
            _tree(res, "Frisky", lambda r: r.compute(), tree_leaves, stamp, min(repeats, 2), timed, ref=True)


def _threads(res, wanted, scale, repeats, timed) -> None:
    _collections(res, wanted, "dask threaded", scale, repeats, timed,
                 lambda x: x.compute(scheduler="threads"))


def _distributed(res, wanted, scale, repeats, tree_leaves, stamp, scratch, timed, log) -> None:
    try:
        import distributed
    except ImportError:
        for w in wanted:
            res.skip(w, "dask.distributed", "not installed")
        return
    import logging

    import dask

    kw = {"dashboard_address": None, "silence_logs": logging.CRITICAL, "local_directory": scratch}
    with dask.config.set({"temporary-directory": scratch}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **kw) as cluster, \
            distributed.Client(cluster) as client:
        client.submit(stamp_leaf, 1, stamp).result()
        _collections(res, wanted, "dask.distributed", scale, repeats, timed, lambda x: x.compute())
        if "dask delayed tree" in wanted:
            _tree(res, "dask.distributed", lambda r: r.compute(), tree_leaves, stamp, 1, timed,
                  note="; fewer leaves: dask is ~100x slower")
