"""Supervision: every worker process has a nanny that restarts it, kills it over memory,
and gives up on a crash loop; ``frisky worker --nworkers``; LocalCluster's own nanny."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cloudpickle
import pytest

import frisky
from frisky.deploy.nanny import Nanny
from frisky.procs import rss

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers started by hand cannot import us


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_at_once():
    os._exit(0)  # a clean exit status: still a death, the nanny must not take it for a stop


def inc(x):
    return x + 1


def allocate(nbytes):
    import numpy as np

    a = np.ones(nbytes // 8)
    return float(a.sum())


def pid_of_worker():
    return os.getpid()



def _scheduler(procs) -> str:
    port = _free_port()
    sched = subprocess.Popen([sys.executable, "-m", "frisky.cli.main", "scheduler", "--port", str(port)],
                             stdout=subprocess.PIPE, text=True)
    procs.append(sched)
    address = f"tcp://127.0.0.1:{port}"
    assert sched.stdout.readline().strip() == f"frisky scheduler at {address}"
    return address


def _worker_lines(proc: subprocess.Popen, n: int, timeout: float) -> list[str]:
    """The first ``n`` "frisky worker ..." lines ``proc`` prints, sorted; if they do not come
    in time, the process is killed and the failure shows what it wrote on stderr."""
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("frisky worker "):
                lines.append(line)
                if len(lines) == n:
                    break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(timeout) or len(lines) < n:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"{len(lines)} of {n} workers said they started within {timeout} s; stderr:\n{err[-4000:]}")
    return sorted(lines)


def test_frisky_worker_restarts_workers_a_task_kills(procs):
    """The task that calls os._exit kills three workers in turn and errs; the workers live on."""
    address = _scheduler(procs)
    nanny = subprocess.Popen([sys.executable, "-m", "frisky.cli.main", "worker", address, "--nworkers", "2",
                              "--name", "w", "--memory-limit", "1GiB"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    procs.append(nanny)
    # each worker says who it is and where it is, as dask's do
    lines = _worker_lines(nanny, 2, timeout=30)
    for name, line in zip(("w-0", "w-1"), lines):
        assert line.startswith(f"frisky worker {name} at tcp://127.0.0.1:") and f"scheduler {address}" in line, line
    with frisky.Client(address, timeout=20) as cl:
        cl.wait_for_workers(2, timeout=30)
        with pytest.raises(frisky.KilledWorker, match="3 workers"):
            cl.submit(die_at_once, pure=False).result(timeout=60)
        cl.wait_for_workers(2, timeout=30)  # restarted under the same names
        assert sorted(w["name"] for w in cl.scheduler_info()["workers"].values()) == ["w-0", "w-1"]
        assert cl.gather(cl.map(inc, range(10))) == list(range(1, 11))
    nanny.terminate()
    out, err = nanny.communicate(timeout=20)
    assert nanny.returncode == 0, err
    assert err.count("restarting it") >= 3, err


def test_frisky_worker_no_nanny_is_not_restarted(procs):
    address = _scheduler(procs)
    w = subprocess.Popen([sys.executable, "-m", "frisky.cli.main", "worker", address, "--no-nanny", "--name", "bare",
                          "--memory-limit", "1GiB"], stdout=subprocess.PIPE, text=True)
    procs.append(w)
    assert w.stdout.readline().startswith("frisky worker bare at ")
    with frisky.Client(address, timeout=20) as cl:
        cl.wait_for_workers(1, timeout=30)
        f = cl.submit(die_at_once, pure=False)
        assert w.wait(30) == 0  # gone, and nobody starts another
        with pytest.raises(TimeoutError):
            f.result(timeout=1)


def _watch_rss(pids: callable, stop: threading.Event, samples: list) -> None:
    while not stop.is_set():
        for pid in pids():
            r = rss(pid)
            if r is not None:
                samples.append((time.monotonic(), pid, r))
        time.sleep(0.002)  # sampling, not synchronisation


def test_memory_terminate_kills_a_worker_that_runs_away():
    """A task making 1 GiB in a 200 MiB worker ends in KilledWorker, and no worker stays far past
    its limit: above 1.1x for less than a second at a time."""
    limit = 200 * 2**20
    with frisky.LocalCluster(n_workers=1, memory_limit=limit) as c, c.get_client() as cl:
        stop = threading.Event()
        samples: list = []

        def pids():
            return [p.pid for p in c.workers.values() if p is not None]

        t = threading.Thread(target=_watch_rss, args=(pids, stop, samples), daemon=True)
        t.start()
        try:
            with pytest.raises(frisky.KilledWorker):
                cl.submit(allocate, 2**30, pure=False).result(timeout=60)
            assert cl.submit(inc, 1).result(timeout=30) == 2  # a fresh worker took over
        finally:
            stop.set()
            t.join()
    worst = max(r for _, _, r in samples)
    over: dict[int, list[float]] = {}
    for ts, pid, r in samples:
        if r > 1.1 * limit:
            over.setdefault(pid, []).append(ts)
    longest = max((ts[-1] - ts[0] for ts in over.values()), default=0.0)
    print(f"max RSS {worst / 2**20:.0f} MiB ({worst / limit:.2f}x the limit); longest above 1.1x: {longest * 1000:.0f} ms")
    assert worst < 2**30 * 0.8, "a worker grew towards the whole gigabyte"
    assert longest < 1.0


def test_crash_loop_is_given_up_with_a_clear_message(caplog):
    """A worker that dies before it can register, again and again, is not restarted forever.
    The nanny works with any spawn function (here plain subprocesses, as a launcher would use)."""
    starts = []

    def spawn(fd):
        starts.append(time.monotonic())
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], pass_fds=[fd])

    nanny = Nanny(spawn, "doomed", failed_starts=4).start()
    try:
        assert nanny.wait_stopped(30)
    finally:
        nanny.stop()
    assert nanny.status == "failed" and len(starts) == 4
    assert "died 4 times in a row before it could register" in nanny.error
    assert "exited with status 3" in nanny.error
    assert nanny.error in caplog.text


def test_nanny_restarts_a_ready_worker_and_reads_its_status_pipe():
    """Ready, then killed: restarted; a worker that says 'stop' is not restarted."""
    script = ("import os, sys, time; fd = int(sys.argv[1]); os.write(fd, b'ready\\n');"
              "mode = open(sys.argv[2]).read() if os.path.exists(sys.argv[2]) else '';"
              "(os.write(fd, b'stop\\n'), sys.exit(0)) if mode == 'stop' else time.sleep(60)")
    flag = f"{os.environ['TMPDIR']}/nanny-mode-{os.getpid()}"

    def spawn(fd):
        return subprocess.Popen([sys.executable, "-c", script, str(fd), flag], pass_fds=[fd])

    nanny = Nanny(spawn, "steady").start()
    try:
        assert nanny.ready.wait(30)
        first = nanny.pid
        with open(flag, "w") as f:
            f.write("stop")
        os.kill(first, signal.SIGKILL)
        assert nanny.wait_stopped(30)  # restarted once, then the new one said stop
        assert nanny.restarts == 1 and nanny.status == "stopped" and nanny.pid != first
    finally:
        nanny.stop()
        os.unlink(flag)
