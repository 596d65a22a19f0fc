"""Kill storm: a random worker SIGKILLed every 0.5 s for 10 s while a workload runs.

The workload: 5,000 short tasks (3 ms each) and a 200-link chain of 1 MiB arrays, on a
LocalCluster of 2 workers. Prints the time without kills, the time with them, and their
ratio; every result is checked. ``--link-ms 40`` makes the chain the critical path: every
kill of the worker holding it then loses the whole chain (its links run where their input
is, and released inputs are recomputed), so that variant measures recomputation, not
recovery. ``python scripts/kill_storm.py [--workers 2] [--kills 20] [--interval 0.5]``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import threading
import time

import frisky

N_SHORT = 5000
CHAIN = 200
LINK_BYTES = 1 << 20


def short(i: int, seconds: float) -> int:
    if seconds:
        time.sleep(seconds)
    return i * 2


def first_link(n: int):
    import numpy as np

    return np.zeros(n // 8)


def link(a, seconds: float):
    if seconds:
        time.sleep(seconds)
    return a + 1


def chain_value(a) -> float:
    return float(a[0]) + float(a[-1])


def workload(client: frisky.Client, n_short: int = N_SHORT, chain: int = CHAIN, short_s: float = 0.003,
             link_s: float = 0.0) -> float:
    """Run the workload, check every result, return the seconds it took."""
    t0 = time.perf_counter()
    futs = client.map(short, range(n_short), [short_s] * n_short, pure=False)
    x = client.submit(first_link, LINK_BYTES, pure=False)
    for _ in range(chain):
        x = client.submit(link, x, link_s, pure=False)
    last = client.submit(chain_value, x, pure=False)
    results = client.gather(futs)
    value = last.result()
    elapsed = time.perf_counter() - t0
    assert results == [i * 2 for i in range(n_short)], "a short task's result is wrong"
    assert value == 2.0 * chain, f"the chain's result is wrong: {value}"
    return elapsed


def storm(cluster: frisky.LocalCluster, kills: int, interval: float, stop: threading.Event, seed: int = 0) -> list:
    """SIGKILL a random live worker every ``interval`` s, ``kills`` times (until ``stop``)."""
    rng = random.Random(seed)
    killed = []
    for _ in range(kills):
        if stop.wait(interval):
            break
        procs = [p for p in cluster.workers.values() if p is not None and p.poll() is None]
        if procs:
            victim = rng.choice(procs)
            try:
                os.kill(victim.pid, signal.SIGKILL)
                killed.append(victim.pid)
            except ProcessLookupError:
                pass
    return killed


def run(n_workers: int = 2, kills: int = 20, interval: float = 0.5, n_short: int = N_SHORT,
        chain: int = CHAIN, short_s: float = 0.003, link_s: float = 0.0) -> tuple[float, float, int]:
    """(seconds unkilled, seconds under the storm, kills made)."""
    with frisky.LocalCluster(n_workers=n_workers) as cluster, cluster.get_client() as client:
        workload(client, 200, 5)  # warm up
        calm = workload(client, n_short, chain, short_s, link_s)
        stop = threading.Event()
        killed: list = []
        t = threading.Thread(target=lambda: killed.extend(storm(cluster, kills, interval, stop)), daemon=True)
        t.start()
        try:
            stormy = workload(client, n_short, chain, short_s, link_s)
        finally:
            stop.set()
            t.join()
    return calm, stormy, len(killed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--short-ms", type=float, default=3.0, help="duration of each short task")
    p.add_argument("--link-ms", type=float, default=0.0, help="duration of each chain link")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--interval", type=float, default=0.5)
    args = p.parse_args()
    calm, stormy, killed = run(args.workers, args.kills, args.interval, short_s=args.short_ms / 1000,
                               link_s=args.link_ms / 1000)
    print(f"unkilled: {calm:.2f} s")
    print(f"{killed} kills: {stormy:.2f} s ({stormy / calm:.2f}x)")


if __name__ == "__main__":
    main()
