"""Memory limits, spilling to disk and reading back, in real worker processes."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import tempfile

import numpy as np
import pytest

import frisky
from frisky.worker.state import MemoryPlan, memory_plan

MiB = 2**20


def chunk(i, mib):
    return np.full(mib * MiB // 8, float(i))


def total(a):
    return float(a.sum())


def add(*xs):
    return sum(xs)


def peak_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def worker_stats(client):
    return {a: w for a, w in client.scheduler_info()["workers"].items()}


def test_memory_plan_is_pure_policy():
    limit = 1000
    assert memory_plan(500, 0, 500, limit, 0.6, 0.7, 0.8) == MemoryPlan(spill=0, pause=False)
    assert memory_plan(700, 0, 700, limit, 0.6, 0.7, 0.8) == MemoryPlan(spill=100, pause=False)
    # already being spilled
    assert memory_plan(700, 100, 700, limit, 0.6, 0.7, 0.8) == MemoryPlan(spill=0, pause=False)
    # RSS high: spill what we hold, pause
    assert memory_plan(100, 0, 900, limit, 0.6, 0.7, 0.8) == MemoryPlan(spill=100, pause=True)
    # nothing to spill: never pause forever
    assert memory_plan(0, 0, 900, limit, 0.6, 0.7, 0.8) == MemoryPlan(spill=0, pause=False)


def test_three_times_the_memory_limit_kept_then_reduced():
    limit = 320 * MiB
    n, mib = 60, 16  # 960 MiB of results on 2 x 320 MiB workers: 1.5x the total limit...
    n *= 2  # ...times two: 3x
    with frisky.LocalCluster(n_workers=2, memory_limit=limit) as c, c.get_client() as cl:
        parts = cl.map(chunk, range(n), [mib] * n)
        sums = cl.map(total, parts)
        grand = cl.submit(add, *sums)
        expected = float(sum(range(n))) * (mib * MiB // 8)
        assert grand.result(timeout=120) == expected
        # everything is still held (spilled) and can be read back
        assert cl.submit(total, parts[0], pure=False).result(timeout=60) == 0.0
        info = worker_stats(cl)
        spilled = sum(w["metrics"].get("memory", {}).get("spilled_bytes", 0) for w in info.values()
                      if w.get("metrics"))
        pids = [w["pid"] for w in info.values()]
        peaks = [peak_rss(p) for p in pids]
        assert all(p <= 1.1 * limit for p in peaks), [p / MiB for p in peaks]
        assert spilled or not info  # heartbeats may lag; the peak check above is what matters


def test_spill_directory_removed_after_kill_and_close():
    tmp = tempfile.gettempdir()
    with frisky.LocalCluster(n_workers=1, memory_limit=200 * MiB) as c, c.get_client() as cl:
        parts = cl.map(chunk, range(12), [16] * 12)
        frisky.wait(parts, timeout=60)
        dirs = glob.glob(os.path.join(tmp, "frisky-spill-*"))
        assert dirs, "the worker spilled"
        pid = next(iter(cl.scheduler_info()["workers"].values()))["pid"]
        os.kill(pid, signal.SIGKILL)
        # lost data is recomputed on the replacement worker
        assert cl.submit(total, parts[3], pure=False).result(timeout=60) == 3.0 * (16 * MiB // 8)
    assert not glob.glob(os.path.join(tmp, "frisky-spill-*"))


@pytest.fixture
def tiny_tmpfs():
    d = tempfile.mkdtemp(prefix="frisky-tinyfs-")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", d], capture_output=True).returncode == 0
    if not ok:
        os.rmdir(d)
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield d
    subprocess.run(["umount", d], check=False)
    os.rmdir(d)


def _check_results(cl, parts, mib):
    """Every value either computed right, or failed with a clear MemoryError: none corrupted."""
    ok = 0
    for i, f in enumerate(parts):
        exc = f.exception(timeout=60)
        if exc is None:  # fetched from the worker, which serves data even while paused
            assert total(f.result(timeout=60)) == float(i) * (mib * MiB // 8)
            ok += 1
        else:
            assert isinstance(exc, MemoryError) and "cannot spill" in str(exc), exc
    return ok


def test_disk_full_keeps_values_and_reports_clear_errors(tiny_tmpfs, monkeypatch):
    monkeypatch.setenv("FRISKY_SPILL_DIRECTORY", tiny_tmpfs)
    with frisky.LocalCluster(n_workers=1, memory_limit=400 * MiB) as c, c.get_client() as cl:
        parts = cl.map(chunk, range(30), [16] * 30)  # 480 MiB: more than memory plus the 8 MiB disk
        assert _check_results(cl, parts, 16) >= 10
        del parts
        assert cl.submit(total, cl.submit(chunk, 1, 1), pure=False).result(timeout=60) == 1.0 * (MiB // 8)


def test_unwritable_spill_directory(monkeypatch, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("FRISKY_SPILL_DIRECTORY", str(ro / "missing"))
    with frisky.LocalCluster(n_workers=1, memory_limit=200 * MiB) as c, c.get_client() as cl:
        parts = cl.map(chunk, range(12), [16] * 12)
        assert _check_results(cl, parts, 16) >= 4
