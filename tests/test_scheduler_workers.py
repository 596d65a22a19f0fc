"""The scheduler and real worker processes: joins and deaths are logged with their
reason, and a worker claiming a live worker's name is refused and told why."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest

from frisky.scheduler.server import SchedulerServer


def _wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # the log is written by the scheduler's thread: poll it
    return True


def _worker(address: str, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "frisky.worker.server", address, "--name", name, "--no-nanny"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(90)
def test_joins_deaths_and_a_duplicate_name(caplog):
    caplog.set_level(logging.INFO, logger="frisky.scheduler")
    server = SchedulerServer("tcp://127.0.0.1:0").start()
    procs = []
    try:
        first = _worker(server.address, "w1")
        procs.append(first)
        assert _wait_for(lambda: "worker w1 (tcp://" in caplog.text and "joined" in caplog.text, 30), caplog.text
        second = _worker(server.address, "w1")
        procs.append(second)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 1
        assert "refused worker 'w1'" in err and "name 'w1' is taken" in err, err
        assert "Traceback" not in err
        assert first.poll() is None, "the live worker keeps its place"
        assert [wi.name for wi in server.state.alive_workers()] == ["w1"]
        first.kill()
        first.wait(10)
        assert _wait_for(lambda: "worker w1" in caplog.text and "died: process exited" in caplog.text, 30), \
            caplog.text
        third = _worker(server.address, "w1")  # the name is free again
        procs.append(third)
        assert _wait_for(lambda: caplog.text.count("joined") == 2, 30), caplog.text
        third.terminate()
        third.wait(10)
        assert _wait_for(lambda: "died: said bye" in caplog.text or caplog.text.count("process exited") == 2, 30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            for f in (p.stdout, p.stderr):
                f.close()
        server.stop()
