#!/usr/bin/env python
"""Frisky against its peers, on the same workloads, side by side in ONE run.

Systems: Frisky, dask.distributed, ``concurrent.futures.ProcessPoolExecutor`` and Ray
(only if it is importable; otherwise it is skipped with a note, never estimated).
Workloads :

- ``no-op tasks``: 2 worker processes, N no-op tasks, results gathered -> tasks/s.
  dask runs ~600 tasks/s here, so it gets a smaller N (shown in the table).
- ``tree reduction``: ``map(inc)`` leaves, then pairwise ``submit(add, a, b)`` layers
  down to one future -> tasks/s counting every task (dask: fewer leaves).
- ``start-up``: in-process ``LocalCluster(processes=False)`` start + 10 tasks + stop
  (warm: after one untimed start), and a 2-worker-process LocalCluster start + 10 tasks
  + stop -> ms.
- ``data``: a float64 array of 256 MiB made by a task on worker A, read by a task
  restricted to worker B -> ms from submitting the consumer to its result. The consumer
  reads what it gets: ``a.sum()`` (every element) and ``a[::512].sum()`` (one element per
  4 KiB page). Also: the same sum on worker A (the floor: no transfer), 1 MiB A -> B, and
  10,000 results of 64 KiB-1 MiB made on one worker and summed by one task on the other.
  Ray: the same functions as Ray tasks over its object store. ProcessPoolExecutor: the
  array is made in the parent and pickled as the argument.
- ``data over TCP``: the full-sum row between worker processes that must use TCP (Frisky
  with ``transport="tcp"``; dask always does), for random (incompressible), constant
  (``np.ones``) and ``arange`` floats.
- ``dask array sum``, ``dask array x+x.T``, ``dask dataframe groupby``, ``dask delayed
  tree``: dask collections on Frisky, dask's threaded scheduler and dask.distributed
  (see ``peers_dask.py``).

Every figure is the median of a few repeats; clusters and pools are started outside the
timed regions, except in the start-up rows. The last column is the speed of the row
relative to Frisky's reference row of that workload (tasks/s or GB/s ratio, or the
inverse ratio of times): 0.01x means 100 times slower than Frisky.

Usage::

    python scripts/compare_peers.py            # full run, under ~5 minutes
    python scripts/compare_peers.py --quick    # smaller N, under ~90 s
    python scripts/compare_peers.py --json     # machine-readable (progress goes to stderr)
    python scripts/compare_peers.py --only "data over TCP"   # some workloads only
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings

import peers_dask  # the dask-collection workloads, in their own module

# ------------------------------------------------------------------ task functions
# Module level in an importable module (this file is imported as ``compare_peers``
# by the entry point below), so every system's workers import them by reference.


def noop(x):
    return x


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def make(nbytes, seed, kind="random"):
    """A float64 array of ``nbytes``: random (incompressible), ``ones`` (constant) or
    ``arange`` (compressible) data."""
    import numpy as np

    if kind == "arange":
        return np.arange(nbytes // 8, dtype="float64")
    if kind == "ones":
        return np.ones(nbytes // 8)
    return np.random.default_rng(seed).random(nbytes // 8)


def consume(arr):
    """Reads every element."""
    return float(arr.sum())


def consume_page(arr):
    """Reads one element per 4 KiB page."""
    return float(arr[::512].sum())


def make_sized(i):
    """Result ``i`` of the many-results row: 64 KiB-1 MiB of float64 ones."""
    import numpy as np

    return np.ones(int(np.random.default_rng(i).integers(64 * 1024, MIB + 1)) // 8)


def sum_all(*arrays):
    return float(sum(a.sum() for a in arrays))


MIB = 1 << 20
WORKLOADS = ["no-op tasks", "tree reduction", "start-up in-process", "start-up 2 processes", "data",
             "data over TCP", *peers_dask.WORKLOADS]
_offsets = iter(range(1, 1 << 30))


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def timed(fn, repeats: int, between=None) -> list[float]:
    """Seconds of ``fn()`` ``repeats`` times; ``between()`` (untimed) after each."""
    out = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if between is not None:
            between()
    return out


class Results:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def add(self, workload: str, system: str, how: str, n, times: list[float], *, kind: str,
            per=None, ref: bool = False, note: str = "", key: str = "") -> None:
        """``kind``: "rate" (``per`` tasks per run -> tasks/s), "ms" (a duration), or
        "gbps" (``per`` bytes per run -> GB/s). ``key`` pairs rows of one workload that
        measure the same thing (compared with Frisky's reference row of that key)."""
        med = statistics.median(times)
        best = min(times)
        if kind == "rate":
            value, best_v, unit = per / med, per / best, "tasks/s"
        elif kind == "gbps":
            value, best_v, unit = per / med / 1e9, per / best / 1e9, "GB/s"
        else:
            value, best_v, unit = med * 1e3, best * 1e3, "ms"
        row = {"workload": workload, "system": system, "how": how, "n": n, "value": value,
               "best": best_v, "unit": unit, "higher_is_better": kind != "ms", "repeats": len(times),
               "reference": ref, "note": note, "key": key}
        self.rows.append(row)
        log(f"  {workload:<22} {system:<26} {_fmt(value)} {unit}  (best {_fmt(best_v)}, "
            f"{len(times)} runs)")

    def skip(self, workload: str, system: str, why: str) -> None:
        self.rows.append({"workload": workload, "system": system, "how": "", "n": None, "value": None,
                          "best": None, "unit": "", "higher_is_better": True, "repeats": 0,
                          "reference": False, "note": why, "key": ""})
        log(f"  {workload:<22} {system:<26} skipped: {why}")

    def ratios(self) -> None:
        """Compute "vs Frisky", and group the rows by workload."""
        self.rows.sort(key=lambda r: WORKLOADS.index(r["workload"]))
        refs = {(r["workload"], r["key"]): r for r in self.rows if r["reference"] and r["value"]}
        for r in self.rows:
            ref = refs.get((r["workload"], r["key"]))
            if ref is None or not r["value"]:
                r["vs_frisky"] = None
            elif r["higher_is_better"]:
                r["vs_frisky"] = r["value"] / ref["value"]
            else:
                r["vs_frisky"] = ref["value"] / r["value"]


def _fmt(v) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


# ------------------------------------------------------------------------- Frisky
def frisky_settle(client) -> None:
    """Wait until the scheduler has handled everything this client sent (e.g. releases of
    futures just dropped), so it does not spill into the next timed run."""
    time.sleep(0.05)
    client.submit(inc, 0, pure=False).result()


def tree_reduce(client, n_leaves: int, offset: int):
    """Pairwise reduction, each layer dropped as the next replaces it (as user code
    would); the same code for Frisky and dask. Returns (root future, tasks)."""
    layer = client.map(inc, range(offset, offset + n_leaves))
    n_tasks = n_leaves
    while len(layer) > 1:
        nxt = [client.submit(add, layer[i], layer[i + 1]) for i in range(0, len(layer) - 1, 2)]
        n_tasks += len(nxt)
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    return layer[0], n_tasks


def tree_expected(n_leaves: int, offset: int) -> int:
    return n_leaves * offset + n_leaves * (n_leaves + 1) // 2


def run_frisky(res: Results, cfg) -> None:
    import frisky

    n = cfg.n
    log(f"Frisky {frisky.__version__}")
    if cfg.wants("no-op tasks", "tree reduction", "data"):
        with frisky.LocalCluster(n_workers=2, threads_per_worker=1) as cluster, cluster.get_client() as client:
            frisky_settle(client)  # workers import this module once, untimed
            if cfg.wants("no-op tasks"):
                frisky_noop(res, cfg, client)
            if cfg.wants("tree reduction"):
                tree_row(res, cfg, client, "Frisky", "map(inc) leaves, submit(add, a, b) layers",
                         cfg.tree_leaves, settle=frisky_settle, ref=True)
            if cfg.wants("data"):
                data_rows(res, cfg, client, "Frisky", frisky.wait, lambda: frisky_settle(client), ref=True)

    if cfg.wants("no-op tasks"):
        with frisky.FriskyExecutor(2) as ex:
            frisky_settle(ex.client)

            def exmap():
                out = list(ex.map(noop, range(n)))
                assert out == list(range(n))

            res.add("no-op tasks", "FriskyExecutor(2)", "ex.map(noop, range(N)), chunksize=1", n,
                    timed(exmap, cfg.repeats, lambda: frisky_settle(ex.client)), kind="rate", per=n)

    if cfg.wants("data over TCP"):
        with frisky.LocalCluster(n_workers=2, threads_per_worker=1, transport="tcp") as cluster, \
                cluster.get_client() as client:
            frisky_settle(client)
            for kind in ("random", "ones", "arange"):
                times = move_times(cfg, client, frisky.wait, lambda: frisky_settle(client), kind)
                res.add("data over TCP", "Frisky (tcp)", f"{cfg.data_mib} MiB A -> task on B, a.sum(), {kind}",
                        f"{cfg.data_mib} MiB", times, kind="gbps", per=cfg.data_mib * MIB, ref=True, key=kind)

    if cfg.wants("start-up in-process"):
        def inproc():
            with frisky.LocalCluster(processes=False) as c, c.get_client() as cl:
                assert cl.gather(cl.map(inc, range(10))) == list(range(1, 11))

        inproc()  # warm
        res.add("start-up in-process", "Frisky", "LocalCluster(processes=False) + 10 tasks + stop, warm",
                10, timed(inproc, cfg.start_repeats), kind="ms", ref=True)

    if cfg.wants("start-up 2 processes"):
        def twoproc():
            with frisky.LocalCluster(n_workers=2) as c, c.get_client() as cl:
                assert cl.gather(cl.map(inc, range(10))) == list(range(1, 11))

        res.add("start-up 2 processes", "Frisky", "LocalCluster(n_workers=2) + 10 tasks + stop", 10,
                timed(twoproc, cfg.start_repeats), kind="ms", ref=True)


def frisky_noop(res: Results, cfg, client) -> None:
    n = cfg.n
    hold = {}

    def between():
        hold.clear()
        frisky_settle(client)

    def fmap():
        start = next(_offsets) * 10_000_000
        futs = client.map(noop, range(start, start + n))
        out = client.gather(futs)
        assert out[0] == start and out[-1] == start + n - 1 and len(out) == n
        hold["f"] = futs

    res.add("no-op tasks", "Frisky", "client.map(noop, range(N)) + gather", n,
            timed(fmap, cfg.repeats, between), kind="rate", per=n, ref=True)

    def fsubmit():
        futs = [client.submit(noop, i, pure=False) for i in range(n)]
        out = client.gather(futs)
        assert out == list(range(n))
        hold["f"] = futs

    res.add("no-op tasks", "Frisky", "[client.submit(noop, i, pure=False)] + gather", n,
            timed(fsubmit, cfg.repeats, between), kind="rate", per=n)


def tree_row(res: Results, cfg, client, system: str, how: str, leaves: int, settle=None,
             ref: bool = False, note: str = "") -> None:
    """The tree reduction on ``client`` (Frisky or dask: the same code), as one row."""
    tasks = []
    hold = {}

    def run():
        off = next(_offsets) * 10_000_000
        root, n_tasks = tree_reduce(client, leaves, off)
        assert root.result() == tree_expected(leaves, off)
        tasks.append(n_tasks)
        hold["f"] = root

    def between():
        hold.clear()
        if settle is not None:
            settle(client)

    times = timed(run, cfg.repeats, between)
    res.add("tree reduction", system, how, leaves, times, kind="rate", per=tasks[0], ref=ref,
            note=f"{tasks[0]:,} tasks{note}")


def data_rows(res: Results, cfg, client, system: str, wait, settle, ref: bool = False) -> None:
    """The ``data`` rows of Frisky or dask (the same code): 256 MiB A -> B read fully and
    one element per page, the same sum on A, 1 MiB A -> B, and many results A -> B."""
    mib = cfg.data_mib
    res.add("data", system, f"{mib} MiB A -> task on B, a.sum()", f"{mib} MiB",
            move_times(cfg, client, wait, settle, "random"), kind="ms", ref=ref, key="full")
    res.add("data", system, f"{mib} MiB A -> task on B, a[::512].sum() (one per page)", f"{mib} MiB",
            move_times(cfg, client, wait, settle, "random", consumer=consume_page), kind="ms", ref=ref, key="page")
    res.add("data", system, f"{mib} MiB made on A, a.sum() on A (the floor)", f"{mib} MiB",
            move_times(cfg, client, wait, settle, "random", same=True), kind="ms", ref=ref, key="floor")
    res.add("data", system, "1 MiB A -> task on B, a.sum()", "1 MiB",
            move_times(cfg, client, wait, settle, "random", nbytes=MIB, repeats=11), kind="ms", ref=ref, key="1mib")
    res.add("data", system, f"{cfg.many:,} results of 64 KiB-1 MiB made on A, summed by one task on B",
            cfg.many, many_times(cfg, client, wait, settle), kind="ms", ref=ref, key="many")


def move_times(cfg, client, wait, settle, kind: str, consumer=None, nbytes: int | None = None,
               same: bool = False, repeats: int | None = None) -> list[float]:
    """Seconds for a task on worker B (A with ``same``) to read an array made on worker A,
    each repeat (Frisky or dask: the same code); ``settle()`` runs untimed after each."""
    a, b = sorted(client.scheduler_info()["workers"])[:2]
    nbytes = nbytes or cfg.data_mib * MIB
    times = []
    for r in range(repeats or cfg.data_repeats):
        x = client.submit(make, nbytes, 1000 + r, kind, workers=[a], pure=False)
        wait([x])
        t0 = time.perf_counter()
        y = client.submit(consumer or consume, x, workers=[a if same else b], pure=False)
        v = y.result()
        times.append(time.perf_counter() - t0)
        assert v == v, v
        del x, y
        settle()
    return times


def many_times(cfg, client, wait, settle) -> list[float]:
    a, b = sorted(client.scheduler_info()["workers"])[:2]
    expected = float(sum(make_sized(i).size for i in range(cfg.many)))
    times = []
    for _ in range(cfg.many_repeats):
        xs = client.map(make_sized, range(cfg.many), workers=[a], pure=False)
        wait(xs)
        t0 = time.perf_counter()
        y = client.submit(sum_all, *xs, workers=[b], pure=False)
        assert y.result() == expected
        times.append(time.perf_counter() - t0)
        del xs, y
        settle()
    return times


# --------------------------------------------------------------------------- dask
def _quiet_dask() -> None:
    warnings.filterwarnings("ignore", module="distributed")
    warnings.filterwarnings("ignore", module="dask")
    for name in ("distributed", "dask", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def run_dask(res: Results, cfg) -> None:
    if importlib.util.find_spec("distributed") is None:
        for w in WORKLOADS:
            if cfg.wants(w):
                res.skip(w, "dask.distributed", "not installed")
        return
    _quiet_dask()
    import distributed

    log(f"dask.distributed {distributed.__version__}")
    import dask

    # dask's scratch files go to a directory removed afterwards, not /tmp/dask-scratch-space
    scratch = tempfile.TemporaryDirectory(prefix="compare-peers-dask-")
    kw = {"dashboard_address": None, "silence_logs": logging.CRITICAL, "local_directory": scratch.name}
    try:
        with dask.config.set({"temporary-directory": scratch.name}):
            _run_dask(res, cfg, distributed, kw)
    finally:
        scratch.cleanup()


def _run_dask(res: Results, cfg, distributed, kw: dict) -> None:
    n = cfg.dask_n
    if cfg.wants("no-op tasks", "tree reduction", "data", "data over TCP"):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **kw) as cluster, \
                distributed.Client(cluster) as client:
            client.submit(inc, 0, pure=False).result()  # workers import this module, untimed
            if cfg.wants("no-op tasks"):
                hold = {}

                def dmap():
                    futs = client.map(noop, range(n), pure=False)
                    assert client.gather(futs) == list(range(n))
                    hold["f"] = futs

                res.add("no-op tasks", "dask.distributed", "client.map(noop, range(N), pure=False) + gather", n,
                        timed(dmap, cfg.repeats, hold.clear), kind="rate", per=n,
                        note="smaller N: dask is ~100x slower")
            if cfg.wants("tree reduction"):
                tree_row(res, cfg, client, "dask.distributed", "the same, client.map / client.submit",
                         cfg.dask_tree_leaves, note="; fewer leaves")
            settle = lambda: time.sleep(0.2)  # noqa: E731 - lets the release reach the workers
            if cfg.wants("data"):
                data_rows(res, cfg, client, "dask.distributed", distributed.wait, settle)
            if cfg.wants("data over TCP"):
                for kind in ("random", "ones", "arange"):
                    times = move_times(cfg, client, distributed.wait, settle, kind)
                    res.add("data over TCP", "dask.distributed", f"{cfg.data_mib} MiB A -> task on B, a.sum(), "
                            f"{kind}", f"{cfg.data_mib} MiB", times, kind="gbps", per=cfg.data_mib * MIB, key=kind)

    if cfg.wants("start-up in-process"):
        def inproc():
            with distributed.LocalCluster(processes=False, **kw) as c, distributed.Client(c) as cl:
                assert cl.gather(cl.map(inc, range(10))) == list(range(1, 11))

        inproc()  # warm
        res.add("start-up in-process", "dask.distributed", "LocalCluster(processes=False) + 10 tasks + stop, warm",
                10, timed(inproc, cfg.start_repeats), kind="ms")

    if cfg.wants("start-up 2 processes"):
        def twoproc():
            with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **kw) as c, \
                    distributed.Client(c) as cl:
                assert cl.gather(cl.map(inc, range(10))) == list(range(1, 11))

        res.add("start-up 2 processes", "dask.distributed", "LocalCluster(n_workers=2) + 10 tasks + stop", 10,
                timed(twoproc, cfg.dask_start_repeats), kind="ms")


# ---------------------------------------------------------------- process pool
def run_ppe(res: Results, cfg) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: this process holds ZeroMQ contexts (see ANCHORS.md, "Hazard")
    if not cfg.wants("no-op tasks", "data"):
        return
    ctx = multiprocessing.get_context("spawn")
    n = cfg.n
    log("ProcessPoolExecutor(2), spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        list(ex.map(noop, range(100)))  # start both processes, untimed

        if cfg.wants("no-op tasks"):
            def psubmit():
                fs = [ex.submit(noop, i) for i in range(cfg.ppe_submit_n)]
                assert [f.result() for f in fs] == list(range(cfg.ppe_submit_n))

            note = "" if cfg.ppe_submit_n == n else f"N={cfg.ppe_submit_n:,}"
            res.add("no-op tasks", "ProcessPoolExecutor(2)", "[ex.submit(noop, i)] then .result()",
                    cfg.ppe_submit_n, timed(psubmit, cfg.ppe_submit_repeats), kind="rate",
                    per=cfg.ppe_submit_n, note=note)

            def pmap():
                assert list(ex.map(noop, range(n), chunksize=256)) == list(range(n))

            res.add("no-op tasks", "ProcessPoolExecutor(2)", "ex.map(noop, range(N), chunksize=256)", n,
                    timed(pmap, cfg.repeats), kind="rate", per=n)
        if not cfg.wants("data"):
            return
        nbytes = cfg.data_mib * MIB
        times = []
        for r in range(cfg.data_repeats):
            seed = 1000 + r
            arr = make(nbytes, seed)
            t0 = time.perf_counter()
            v = ex.submit(consume, arr).result()
            times.append(time.perf_counter() - t0)
            assert v == float(arr.sum()), v
            del arr
        res.add("data", "ProcessPoolExecutor(2)", f"{cfg.data_mib} MiB made in the parent, pickled as the argument, "
                "a.sum()", f"{cfg.data_mib} MiB", times, kind="ms", key="full")


# --------------------------------------------------------------------------- Ray
def run_ray(res: Results, cfg) -> None:
    workloads = [w for w in ("no-op tasks", "data", "start-up 2 processes") if cfg.wants(w)]
    if not workloads:
        return
    if importlib.util.find_spec("ray") is None:
        res.notes.append("Ray is not installed here: skipped (nothing was estimated).")
        log("Ray: not installed, skipped")
        return
    import ray

    log(f"Ray {ray.__version__}")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file written to ~/.ray
    kw = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}
    try:
        if "no-op tasks" in workloads or "data" in workloads:
            ray.init(**kw)
            try:
                _run_ray(res, cfg, ray, workloads)
            finally:
                ray.shutdown()
        if "start-up 2 processes" in workloads:
            def start():
                ray.init(**kw)
                try:
                    rinc = ray.remote(inc)
                    assert ray.get([rinc.remote(i) for i in range(10)]) == list(range(1, 11))
                finally:
                    ray.shutdown()

            res.add("start-up 2 processes", "Ray", "ray.init(num_cpus=2) + 10 tasks + shutdown", 10,
                    timed(start, cfg.dask_start_repeats), kind="ms")
    except Exception as e:  # noqa: BLE001 - report, never fake
        for w in workloads:
            res.skip(w, "Ray", f"failed: {e!r}")


def _run_ray(res: Results, cfg, ray, workloads: list[str]) -> None:
    if "no-op tasks" in workloads:
        rnoop = ray.remote(noop)
        n = cfg.ray_n
        ray.get([rnoop.remote(i) for i in range(100)])

        def rmap():
            assert ray.get([rnoop.remote(i) for i in range(n)]) == list(range(n))

        res.add("no-op tasks", "Ray", "ray.get([noop.remote(i) for i in range(N)])", n,
                timed(rmap, cfg.repeats), kind="rate", per=n, note=f"N={n:,}")
    if "data" in workloads:
        rmake = ray.remote(make)
        nbytes = cfg.data_mib * MIB

        def ray_move(consumer, size: int, repeats: int) -> list[float]:
            rconsume = ray.remote(consumer)
            times = []
            for r in range(repeats):
                x = rmake.remote(size, 1000 + r)
                ray.wait([x], fetch_local=False)
                t0 = time.perf_counter()
                v = ray.get(rconsume.remote(x))
                times.append(time.perf_counter() - t0)
                assert v == v, v
                del x
            return times

        mib = cfg.data_mib
        res.add("data", "Ray", f"{mib} MiB made by one task, a.sum() by another (object store)", f"{mib} MiB",
                ray_move(consume, nbytes, cfg.data_repeats), kind="ms", key="full")
        res.add("data", "Ray", f"{mib} MiB, a[::512].sum() (one per page)", f"{mib} MiB",
                ray_move(consume_page, nbytes, cfg.data_repeats), kind="ms", key="page")
        res.add("data", "Ray", "1 MiB, a.sum()", "1 MiB", ray_move(consume, MIB, 11), kind="ms", key="1mib")
        rsized, rsum = ray.remote(make_sized), ray.remote(sum_all)
        expected = float(sum(make_sized(i).size for i in range(cfg.many)))
        times = []
        for _ in range(cfg.many_repeats):
            refs = [rsized.remote(i) for i in range(cfg.many)]
            ray.wait(refs, num_returns=len(refs), fetch_local=False)
            t0 = time.perf_counter()
            assert ray.get(rsum.remote(*refs)) == expected
            times.append(time.perf_counter() - t0)
            del refs
        res.add("data", "Ray", f"{cfg.many:,} results of 64 KiB-1 MiB, summed by one task", cfg.many, times,
                kind="ms", key="many")


# ------------------------------------------------------------------------- output
def markdown(res: Results, meta: dict) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['machine']} (load average at start {meta['loadavg']}), "
        f"Python {meta['python']}; command: `{meta['command']}`",
        "",
        "| workload | system | how | N | result | vs Frisky |",
        "|---|---|---|---|---|---|",
    ]
    for r in res.rows:
        n = r["n"]
        n = f"{n:,}" if isinstance(n, int) else (n or "")
        if r["value"] is None:
            result, vs = f"skipped: {r['note']}", ""
        else:
            result = f"{_fmt(r['value'])} {r['unit']}"
            vs = "1 (ref)" if r["reference"] else (f"{_fmt(r['vs_frisky'])}x" if r.get("vs_frisky") else "")
            if r["note"]:
                result += f" ({r['note']})"
        lines.append(f"| {r['workload']} | {r['system']} | {r['how']} | {n} | {result} | {vs} |")
    lines.append("")
    lines.append("Each result is the median of a few runs (their number and the best run are in "
                 "`--json`). \"vs Frisky\" is the row's speed over that of Frisky's reference row for the "
                 "same workload: below 1 is slower than Frisky. Data rows read what they move "
                 "(every element, or one per page) and time submit-to-answer.")
    for note in res.notes:
        lines.append(f"\n{note}")
    return "\n".join(lines)


class Config:
    def __init__(self, quick: bool, repeats: int | None, only: list[str] | None = None) -> None:
        self.quick = quick
        self.only = only
        self.repeats = repeats or 3
        if quick:
            self.n, self.dask_n, self.ppe_submit_n, self.ray_n = 20_000, 1_000, 20_000, 2_000
            self.tree_leaves, self.dask_tree_leaves = 10_000, 250
            self.data_mib, self.data_repeats = 64, 3
            self.many, self.many_repeats = 1_000, 2
            self.start_repeats, self.dask_start_repeats = 5, 3
            self.ppe_submit_repeats = self.repeats
        else:
            self.n, self.dask_n, self.ppe_submit_n, self.ray_n = 200_000, 5_000, 200_000, 10_000
            self.tree_leaves, self.dask_tree_leaves = 100_000, 1_000
            self.data_mib, self.data_repeats = 256, 5
            self.many, self.many_repeats = 10_000, 3
            self.start_repeats, self.dask_start_repeats = 7, 3
            self.ppe_submit_repeats = min(self.repeats, 2)  # ~25 s a run at ~8k tasks/s

    def wants(self, *workloads: str) -> bool:
        """Whether any of ``workloads`` is to be measured in this run."""
        return self.only is None or any(w in self.only for w in workloads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N (under ~90 s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement (default 3)")
    parser.add_argument("--only", action="append", choices=WORKLOADS, metavar="WORKLOAD",
                        help=f"measure only this workload (repeatable): {', '.join(WORKLOADS)}")
    args = parser.parse_args(argv)
    cfg = Config(args.quick, args.repeats, args.only)
    cmd = " ".join(shlex.quote(a) for a in ["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    meta = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": cmd,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "quick": cfg.quick,
    }
    res = Results()
    t0 = time.monotonic()
    run_frisky(res, cfg)
    run_dask(res, cfg)
    run_ppe(res, cfg)
    run_ray(res, cfg)
    peers_dask.run(res, cfg, timed, log)
    res.ratios()
    meta["seconds"] = round(time.monotonic() - t0, 1)
    log(f"done in {meta['seconds']} s")
    if args.json:
        print(json.dumps({**meta, "rows": res.rows, "notes": res.notes}, indent=2))
    else:
        print(markdown(res, meta))
    return 0


if __name__ == "__main__":
    # Run as the module ``compare_peers``, so task functions pickle by reference.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import compare_peers

    sys.exit(compare_peers.main())
