"""Results worth 3x the cluster's memory, all kept, then reduced: Frisky vs dask.distributed.

Both get 2 worker processes with the same memory limit. Each produces ``n`` chunks of
``--chunk-mib`` MiB (float64), keeps every future, sums each chunk, then sums the sums.
Reports wall time, the right answer, and each worker's peak RSS (VmHWM) against its
limit. dask comes from the ``[bench]`` extra; without it the row is skipped, never faked.

    python scripts/memory_compare.py [--limit-mib 512] [--chunk-mib 16] [--factor 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

MiB = 2**20


def chunk(i: int, mib: int):
    return np.full(mib * MiB // 8, float(i))


def total(a) -> float:
    return float(a.sum())


def add(*xs: float) -> float:
    return sum(xs)


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _workload(cl, pids: list[int], n: int, mib: int) -> dict:
    """The timed part, the same for both systems (their clients share this API)."""
    t0 = time.perf_counter()
    parts = cl.map(chunk, range(n), [mib] * n)
    sums = cl.map(total, parts)
    result = cl.submit(add, *sums).result()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "result": result, "peaks": [peak_rss(p) for p in pids]}


def run_frisky(n: int, mib: int, limit: int) -> dict:
    import frisky

    with frisky.LocalCluster(n_workers=2, memory_limit=limit) as c, c.get_client() as cl:
        pids = [w["pid"] for w in cl.scheduler_info()["workers"].values()]
        return _workload(cl, pids, n, mib)


def run_dask(n: int, mib: int, limit: int) -> dict:
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        return {"skipped": "dask.distributed is not installed (pip install -e '.[bench]')"}
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="dask-spill-") as tmp, dask.config.set(
        {"temporary-directory": tmp, "distributed.worker.memory.target": 0.6,
         "distributed.worker.memory.spill": 0.7, "distributed.worker.memory.pause": 0.8}
    ), LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=limit, dashboard_address=None,
                    processes=True) as c, Client(c) as cl:
        pids = list(cl.run(os.getpid).values())
        return _workload(cl, pids, n, mib)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit-mib", type=int, default=512, help="memory limit of each worker")
    p.add_argument("--chunk-mib", type=int, default=16)
    p.add_argument("--factor", type=float, default=3.0, help="results as a multiple of total memory")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    limit = args.limit_mib * MiB
    n = int(args.factor * 2 * args.limit_mib / args.chunk_mib)
    expected = float(sum(range(n))) * (args.chunk_mib * MiB // 8)
    rows = {"frisky": run_frisky(n, args.chunk_mib, limit), "dask": run_dask(n, args.chunk_mib, limit)}
    for r in rows.values():
        if "result" in r:
            r["correct"] = r["result"] == expected
            r["peak_over_limit"] = [round(x / limit, 3) for x in r.pop("peaks")]
    if "seconds" in rows["dask"]:
        rows["dask_over_frisky_time"] = rows["dask"]["seconds"] / rows["frisky"]["seconds"]
    if args.json:
        print(json.dumps({"tasks": 2 * n + 1, "limit": limit, **rows}, indent=2))
        return
    print(f"{n} chunks of {args.chunk_mib} MiB = {n * args.chunk_mib} MiB on 2 workers x {args.limit_mib} MiB "
          f"({args.factor:g}x the total limit), kept, then reduced")
    print("| system | time (s) | correct | peak RSS / limit, per worker |")
    print("|---|---|---|---|")
    for name in ("frisky", "dask"):
        r = rows[name]
        if "skipped" in r:
            print(f"| {name} | skipped: {r['skipped']} | | |")
        else:
            print(f"| {name} | {r['seconds']:.2f} | {r['correct']} | {', '.join(map(str, r['peak_over_limit']))} |")
    if "dask_over_frisky_time" in rows:
        print(f"Frisky is {rows['dask_over_frisky_time']:.2f}x faster than dask.distributed here.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
