"""``frisky demo``: a local cluster with a dashboard runs a mixed workload for a few seconds
(maps, a tree reduction, NumPy blocks moving between workers, a little spill, a task that
fails and one that succeeds on retry), then shows ``frisky observe overview`` of the run.

The dashboard's URL is the first line printed: open it, or point ``frisky observe`` at it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

BLOCK = 1 << 20  # float64 values in one NumPy block: 8 MiB
WORKER_MEMORY = 384 << 20  # per worker: the held blocks pass the spill target, far from pausing


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def block(seed: int):
    """An 8 MiB NumPy block (``BLOCK`` float64 values)."""
    import numpy as np

    return np.random.default_rng(seed).random(BLOCK)


def combine(a, b) -> float:
    """Reads two blocks, which usually live on different workers: one travels."""
    return float((a + b).sum())


def total(x) -> float:
    return float(x.sum())


def fail(x: int) -> int:
    raise ValueError(f"task {x} fails on purpose")


def flaky(marker: str) -> str:
    """Fails the first time it runs (it leaves ``marker`` behind), succeeds after."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise RuntimeError("first attempt fails on purpose")
    return "succeeded on retry"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


class Workload:
    """One demo run against ``client`` on ``workers`` (their names)."""

    def __init__(self, client, workers: list[str], say) -> None:
        self.client = client
        self.workers = workers
        self.say = say
        self.submitted = 0
        self.held: list = []  # blocks kept to the end: past the spill target, some go to disk
        self.failed = None  # the failed task's future, kept: the overview counts it as erred

    def mapped(self, n: int) -> str:
        t = time.perf_counter()
        futs = self.client.map(inc, range(n), pure=False)
        result = sum(self.client.gather(futs))
        assert result == n * (n + 1) // 2, result
        self.submitted += n
        return f"map {n:,} in {_ms(time.perf_counter() - t)}"

    def tree(self, leaves: int) -> str:
        t = time.perf_counter()
        layer = self.client.map(inc, range(leaves), pure=False)
        tasks = leaves
        while len(layer) > 1:
            pairs = [self.client.submit(add, layer[i], layer[i + 1], pure=False) for i in range(0, len(layer) - 1, 2)]
            layer = pairs + ([layer[-1]] if len(layer) % 2 else [])
            tasks += len(pairs)
        result = layer[0].result()
        assert result == leaves * (leaves + 1) // 2, result
        self.submitted += tasks
        return f"tree {tasks:,} in {_ms(time.perf_counter() - t)}"

    def arrays(self, seed: int) -> str:
        """A block made on each worker, then summed with its neighbour's: 8 MiB moves per pair."""
        t = time.perf_counter()
        n = len(self.workers)
        blocks = [self.client.submit(block, seed + i, workers=[w], pure=False) for i, w in enumerate(self.workers)]
        sums = [self.client.submit(combine, blocks[i], blocks[(i + 1) % n], workers=[self.workers[i]], pure=False)
                for i in range(n)]
        self.client.gather(sums)
        self.submitted += 2 * n
        return f"arrays {n * BLOCK * 8 >> 20} MiB moved in {_ms(time.perf_counter() - t)}"

    def hold(self, per_worker: int) -> str:
        from frisky import wait

        """Keep ``per_worker`` blocks on each worker: past its spill target, the oldest go to disk."""
        t = time.perf_counter()
        self.held = [self.client.submit(block, 10_000 + i, workers=[w], pure=False)
                     for i in range(per_worker) for w in self.workers]
        wait(self.held)
        self.submitted += len(self.held)
        return (f"held {len(self.held) * BLOCK * 8 >> 20} MiB on {len(self.workers)} workers in "
                f"{_ms(time.perf_counter() - t)}")

    def reread(self) -> str:
        """Read the oldest held blocks again: spilled ones come back from disk."""
        t = time.perf_counter()
        firsts = self.held[: len(self.workers) * 2]
        self.client.gather([self.client.submit(total, f, pure=False) for f in firsts])
        self.submitted += len(firsts)
        return f"reread {len(firsts) * BLOCK * 8 >> 20} MiB in {_ms(time.perf_counter() - t)}"

    def failure(self) -> str:
        fut = self.failed = self.client.submit(fail, 7, pure=False)
        self.submitted += 1
        try:
            fut.result()
        except ValueError as e:
            return f"a failing task raised ValueError({e}), as planned"
        raise AssertionError("the failing task succeeded")

    def retry(self, marker: str) -> str:
        fut = self.client.submit(flaky, marker, retries=1, pure=False)
        self.submitted += 1
        return f"a flaky task {fut.result()} (retries=1)"


def _dashboard(client, cluster) -> str | None:
    return getattr(cluster, "dashboard_link", None) or client.scheduler_info().get("dashboard")


def main(argv: list[str] | None = None) -> None:
    import frisky
    from frisky.cli import args as cli

    parser = cli.Parser(prog="frisky demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=_duration, default=10.0, help="seconds of work (default 10)")
    parser.add_argument("--workers", type=cli.positive_int, default=None,
                        help="worker processes (default: cores, 2 to 4)")
    parser.add_argument("--dashboard-address", default=":8787",
                        help="where the dashboard listens (default :8787; a free port if taken)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the cluster and dashboard up after the run, until Ctrl-C")
    args = parser.parse_args(argv)
    workers = args.workers or min(4, max(2, os.cpu_count() or 1))
    scratch = tempfile.mkdtemp(prefix="frisky-demo-")
    t0 = time.perf_counter()
    try:
        with frisky.LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=WORKER_MEMORY,
                                 dashboard_address=args.dashboard_address) as cluster, \
                cluster.get_client() as client:
            url = _dashboard(client, cluster)
            print(f"dashboard: {url}   (frisky observe overview {url})", flush=True)
            names = sorted(str(w["name"]) for w in client.scheduler_info()["workers"].values())
            print(f"{workers} workers up in {_ms(time.perf_counter() - t0)}, "
                  f"{WORKER_MEMORY >> 20} MiB memory limit each", flush=True)
            work = Workload(client, names, lambda s: print(s, flush=True))  # its futures live on to the end
            run(work, args.duration, scratch)
            problem = "the cluster has no dashboard" if not url else _overview(url, time.time())
            if url and not problem and not args.keep:
                print("(the cluster stops now: frisky demo --keep keeps it up for these commands and the "
                      "dashboard)", flush=True)
            if args.keep and url:
                print(f"the cluster stays up at {url}: Ctrl-C stops it", flush=True)
                _wait_for_ctrl_c()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # only our marker file lives there
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)
    if problem:
        sys.stderr.write(f"frisky demo: cannot show the run's overview: {problem}\n")
        raise SystemExit(1)


def run(work: Workload, duration: float, scratch: str) -> None:
    """Rounds of maps, trees and moving arrays for ``duration`` seconds, with the spill,
    failure and retry steps spread over them (all run at least once)."""
    start = time.perf_counter()
    once = [[lambda: work.hold(per_worker=int(0.7 * WORKER_MEMORY) // (BLOCK * 8)), work.failure],
            [lambda: work.retry(os.path.join(scratch, "flaky")), work.reread]]
    round_no = 0
    while True:
        round_no += 1
        steps = [work.mapped(5_000), work.tree(1_024), work.arrays(round_no * 100)]
        if once:
            steps += [step() for step in once.pop(0)]
        work.say(f"round {round_no}: " + " · ".join(steps[:3]))
        for line in steps[3:]:
            work.say(f"  {line}")
        if not once and time.perf_counter() - start >= duration:
            break
    work.say(f"{work.submitted:,} tasks submitted in {time.perf_counter() - start:.1f} s")


def _overview(url: str, ended: float) -> str | None:
    """Print ``frisky observe overview`` of this run, once the workers' last telemetry is
    in; the reason in one line if it cannot."""
    from frisky.observe.cli import show
    from frisky.observe.fetch import ObserveError

    try:
        _heard_since(url, ended, timeout=5.0)
        print(flush=True)
        show("overview", url)
    except ObserveError as e:
        return str(e)
    return None


def _heard_since(url: str, ended: float, timeout: float) -> None:
    """Wait until every worker has sent a heartbeat (with its telemetry) after ``ended``."""
    from frisky.observe import fetch

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = fetch.get(url, "workers")["workers"]
        if all(float(w["last_seen"]) > ended for w in workers):
            return
        time.sleep(0.1)  # polling a remote condition: the HTTP API has no wait


def _wait_for_ctrl_c() -> None:
    import threading

    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print(flush=True)


def _duration(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, not {text!r}")
    return value


if __name__ == "__main__":
    main()
