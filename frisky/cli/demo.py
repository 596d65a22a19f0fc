"""``frisky demo``: a local cluster running a map, a tree reduction and a NumPy step."""

from __future__ import annotations

import time


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def block_sum(seed: int, n: int) -> float:
    import numpy as np

    rng = np.random.default_rng(seed)
    return float(rng.standard_normal(n).sum())


def _rate(n: int, seconds: float) -> str:
    return f"{n:,} tasks in {seconds * 1000:.0f} ms ({n / seconds:,.0f} tasks/s)"


def main(argv: list[str] | None = None) -> None:
    import frisky
    from frisky.cli import args as cli

    parser = cli.Parser(prog="frisky demo", description=__doc__)
    parser.add_argument("--workers", type=cli.positive_int, default=None, help="worker processes (default: cores)")
    parser.add_argument("--tasks", type=cli.positive_int, default=100_000, help="tasks in the map step")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    with frisky.LocalCluster(n_workers=args.workers) as cluster, cluster.get_client() as client:
        info = client.scheduler_info()
        print(f"cluster up in {(time.perf_counter() - t0) * 1000:.0f} ms: {len(info['workers'])} workers "
              f"at {cluster.scheduler_address}", flush=True)

        n = args.tasks
        t = time.perf_counter()
        futs = client.map(inc, range(n))
        done = 0
        for _ in frisky.as_completed(futs):
            done += 1
            if done % (n // 4 or 1) == 0:
                print(f"  map: {done:,}/{n:,} done", flush=True)
        total = sum(client.gather(futs))
        assert total == n * (n + 1) // 2, total
        print(f"map     {_rate(n, time.perf_counter() - t)}; sum = {total:,}", flush=True)
        del futs

        leaves = 4096
        t = time.perf_counter()
        layer = client.map(inc, range(leaves))
        tasks = leaves
        while len(layer) > 1:
            layer = [client.submit(add, layer[i], layer[i + 1]) for i in range(0, len(layer) - 1, 2)] + (
                [layer[-1]] if len(layer) % 2 else []
            )
            tasks += len(layer)
        result = layer[0].result()
        assert result == leaves * (leaves + 1) // 2, result
        print(f"tree    {_rate(tasks, time.perf_counter() - t)}; root = {result:,}", flush=True)

        t = time.perf_counter()
        parts = client.map(block_sum, range(32), [1_000_000] * 32)
        grand = client.submit(sum, parts).result()
        print(f"numpy   32 blocks of 1M normals in {(time.perf_counter() - t) * 1000:.0f} ms; "
              f"sum = {grand:,.1f}", flush=True)
    print(f"done in {time.perf_counter() - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
