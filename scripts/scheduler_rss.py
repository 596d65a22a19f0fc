"""The scheduler's RSS before, at the peak of, and after a large map of no-ops is released.

A real ``LocalCluster(n_workers=2)`` (the scheduler its own process): the client maps
``--tasks`` no-ops, gathers them, drops every future, then waits until the scheduler holds
no task rows and says it gave them all back (its ``info``: ``rows`` and ``rows_given_back``)
before reading the scheduler's RSS (``VmRSS`` of ``/proc/<pid>/status``). The peak is
sampled every 50 ms by a thread while the map runs. Issue 13's target: after <= 1.2x before.

    python scripts/scheduler_rss.py [--tasks 1000000] [--rounds 1] [--json]

``--rounds`` repeats the map on the same cluster (memory that comes back once should come
back every time); ``--env NAME=VALUE`` sets a variable for the cluster's processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

MiB = 1 << 20


def noop(x):
    return None


def rss(pid: int) -> int:
    """``VmRSS`` of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Peak(threading.Thread):
    """Samples a process's RSS until stopped; keeps the highest."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, rss(self.pid))


def wait_released(cl, given_back_before: int, n: int, timeout: float) -> dict:
    """Ask the scheduler until it holds no task rows and has given ``n`` more back."""
    deadline = time.monotonic() + timeout
    while True:
        info = cl.scheduler_info()
        if info["rows"] == 0 and info["rows_given_back"] >= given_back_before + n:
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scheduler still holds {info['rows']} rows "
                               f"(given back {info['rows_given_back'] - given_back_before} of {n})")
        time.sleep(0.1)  # a poll interval: the condition above is what ends the wait


def measure(n: int, rounds: int, timeout: float) -> dict:
    import frisky

    with frisky.LocalCluster(n_workers=2) as c, c.get_client() as cl:
        info = cl.scheduler_info()
        pid = info["pid"]
        out = {"tasks": n, "pid": pid, "before": rss(pid), "rounds": []}
        for _ in range(rounds):
            given = cl.scheduler_info()["rows_given_back"]
            peak = Peak(pid)
            peak.start()
            t0 = time.perf_counter()
            futs = cl.map(noop, range(n))
            results = cl.gather(futs)
            seconds = time.perf_counter() - t0
            assert len(results) == n and results[0] is None
            del futs, results
            top = peak.stop()
            wait_released(cl, given, n, timeout)
            cl.scheduler_info()  # one more round trip: the scheduler trims again once idle
            out["rounds"].append({"peak": top, "after": rss(pid), "seconds": seconds})
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the release")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for kv in args.env:
        name, sep, value = kv.partition("=")
        if not sep:
            p.error(f"--env wants NAME=VALUE, not {kv!r}")
        os.environ[name] = value
    m = measure(args.tasks, args.rounds, args.timeout)
    if args.json:
        print(json.dumps(m))
        return 0
    print(f"scheduler pid {m['pid']}, {m['tasks']:,} tasks; before {m['before'] / MiB:.0f} MiB")
    for i, r in enumerate(m["rounds"]):
        print(f"round {i + 1}: {r['seconds']:.1f} s, peak {r['peak'] / MiB:.0f} MiB, "
              f"after release {r['after'] / MiB:.0f} MiB ({r['after'] / m['before']:.2f}x before)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
