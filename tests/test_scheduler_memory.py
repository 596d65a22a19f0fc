"""A real scheduler process gives its memory back once a large graph is released."""

from __future__ import annotations

import time

import psutil
import pytest

import frisky

N_TASKS = 200_000


def noop(x):
    return x


def _wait(cond, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)  # polling a process's RSS: there is no event to wait on


@pytest.mark.timeout(300)
def test_scheduler_rss_falls_back_after_many_tasks_are_released():
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1) as cluster, cluster.get_client() as client:
        proc = psutil.Process(client.scheduler_info()["pid"])
        assert client.gather(client.map(noop, range(1000), key=[f"warm-{i}" for i in range(1000)]))[-1] == 999
        assert _wait(lambda: not client.scheduler_info()["tasks"], 30)
        before = proc.memory_info().rss
        futures = client.map(noop, range(N_TASKS))
        peak = before
        done = 0
        for f in futures[::1000]:
            f.result(timeout=120)
            peak = max(peak, proc.memory_info().rss)
            done += 1
        assert client.gather(futures[-10:]) == list(range(N_TASKS - 10, N_TASKS))
        peak = max(peak, proc.memory_info().rss)
        del futures, f
        assert _wait(lambda: not client.scheduler_info()["tasks"], 60), "every task is forgotten"
        after = _wait(lambda: (rss := proc.memory_info().rss) <= 1.2 * before and rss, 30) or proc.memory_info().rss
        mib = 1 << 20
        print(f"scheduler RSS: before {before / mib:.0f} MiB, peak {peak / mib:.0f} MiB, after {after / mib:.0f} MiB")
        assert peak > before + 20 * mib, "the graph should have cost the scheduler memory"
        assert after <= 1.2 * before, (f"RSS {after / mib:.0f} MiB after release, "
                                       f"{before / mib:.0f} MiB before ({peak / mib:.0f} MiB at peak)")
