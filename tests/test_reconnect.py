"""A scheduler that goes away: workers rejoin one restarted on the same address within
seconds; a LocalCluster whose scheduler died says so once, starts no more workers and
closes fast."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time

import cloudpickle
import pytest

import frisky

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers started by hand cannot import us


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inc(x):
    return x + 1



def _start_scheduler(port: int) -> tuple[subprocess.Popen, float]:
    sched = subprocess.Popen([sys.executable, "-m", "frisky.cli.main", "scheduler", "--port", str(port)],
                             stdout=subprocess.PIPE, text=True)
    assert sched.stdout.readline().startswith("frisky scheduler at ")
    return sched, time.monotonic()


def _worker_pids(cl) -> dict[str, int]:
    return {w["name"]: w["pid"] for w in cl.scheduler_info()["workers"].values()}


@pytest.mark.timeout(120)
def test_workers_rejoin_a_scheduler_restarted_on_the_same_address(procs):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched, _ = _start_scheduler(port)
    procs.append(sched)
    nanny = subprocess.Popen([sys.executable, "-m", "frisky.cli.main", "worker", address, "--nworkers", "2",
                              "--name", "r", "--memory-limit", "1GiB"], stdout=subprocess.PIPE, text=True)
    procs.append(nanny)
    assert all(nanny.stdout.readline().startswith("frisky worker r-") for _ in range(2))
    with frisky.Client(address, timeout=20) as cl:
        cl.wait_for_workers(2, timeout=30)
        before = _worker_pids(cl)
        assert cl.submit(inc, 1).result(timeout=30) == 2
    sched.send_signal(signal.SIGKILL)
    sched.wait()
    sched, started = _start_scheduler(port)
    procs.append(sched)
    with frisky.Client(address, timeout=20) as cl:
        cl.wait_for_workers(2, timeout=30)
        rejoined = time.monotonic() - started
        print(f"workers registered again {rejoined:.2f} s after the new scheduler started")
        assert rejoined <= 5.0
        assert _worker_pids(cl) == before, "the same worker processes, not replacements"
        assert cl.gather(cl.map(inc, range(20))) == list(range(1, 21))
    for _ in range(2):
        assert "rejoined the scheduler" in nanny.stdout.readline()


@pytest.mark.timeout(60)
def test_local_cluster_whose_scheduler_died_says_so_once_and_stops(caplog):
    caplog.set_level(logging.ERROR, logger="frisky.deploy")
    c = frisky.LocalCluster(n_workers=2)
    try:
        with c.get_client() as cl:
            assert cl.submit(inc, 1).result(timeout=30) == 2
        nannies = list(c._nannies.values())
        c._scheduler_proc.send_signal(signal.SIGKILL)
        for n in nannies:
            assert n.wait_stopped(20)
        assert [n.restarts for n in nannies] == [0, 0], "no worker was started after the scheduler died"
        assert c.status == "failed"
        t0 = time.monotonic()
    finally:
        c.close()
    assert time.monotonic() - t0 < 2.0
    said = [r for r in caplog.records if "scheduler" in r.getMessage()]
    assert len(said) == 1, said
