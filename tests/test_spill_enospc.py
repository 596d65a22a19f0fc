"""A full spill disk (ENOSPC) on a real, small tmpfs: spilling resumes when space returns,
scattered data acknowledged to a client is never lost, and nobody waits forever."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
import time

import numpy as np
import pytest

import frisky

MiB = 2**20
DISK = 64  # MiB of tmpfs


def chunk(i, mib):
    return np.full(mib * MiB // 8, float(i))


def total(a):
    return float(a.sum())


@pytest.fixture
def small_disk(monkeypatch):
    """A 64 MiB tmpfs as the spill directory (needs root to mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    d = tempfile.mkdtemp(prefix="frisky-smalldisk-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}m", "tmpfs", d], capture_output=True)
    if r.returncode:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    monkeypatch.setenv("FRISKY_SPILL_DIRECTORY", d)
    yield d
    subprocess.run(["umount", "-l", d], check=False)
    os.rmdir(d)


def fill(directory: str) -> str:
    """Fill the file system of ``directory`` to the last byte; return the filler's path."""
    path = os.path.join(directory, "filler")
    block = b"\xa5" * MiB
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        try:  # the last partial block
            while True:
                f.write(b"\xa5" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    vfs = os.statvfs(directory)
    assert vfs.f_bavail * vfs.f_frsize < 4096
    return path


def spill_metrics(cl) -> dict:
    """The worker's memory metrics from its last heartbeat."""
    (w,) = cl.scheduler_info()["workers"].values()
    return (w.get("metrics") or {}).get("memory") or {}


def worker_pid(cl) -> int:
    (w,) = cl.scheduler_info()["workers"].values()
    return w["pid"]


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def no_pause(monkeypatch):
    # while the disk is full the worker may pause and fail new tasks with MemoryError (a
    # clear error); these tests hold less than that and check what must never happen
    monkeypatch.setenv("FRISKY_MEMORY_PAUSE", "0.95")


def test_computed_values_spill_again_once_the_disk_has_room(small_disk, no_pause):
    filler = fill(small_disk)
    limit = 640 * MiB
    with frisky.LocalCluster(n_workers=1, memory_limit=limit) as c, c.get_client() as cl:
        # 25 x 16 MiB = 400 MiB: over the 384 MiB spill target, so the worker tries to spill,
        # and well under the 608 MiB at which its supervisor would restart it
        first = cl.map(chunk, range(25), [16] * 25)
        frisky.wait(first, timeout=60)
        pid = worker_pid(cl)
        wait_for(lambda: spill_metrics(cl).get("spill_failures") or spill_metrics(cl).get("error"), 30,
                 "the worker to report the full disk")
        for i, f in enumerate(first):  # kept in memory, not lost (served even while paused)
            assert total(f.result(timeout=60)) == float(i) * (16 * MiB // 8)
        os.unlink(filler)
        # the disk has room again: the worker spills (with back-off), and a later job that
        # needs the disk runs as if the disk had never been full
        later = cl.map(chunk, range(100, 120), [16] * 20)
        sums = cl.map(total, later)
        frisky.wait(sums, timeout=120)
        assert [f.result(timeout=10) for f in sums] == [float(i) * (16 * MiB // 8) for i in range(100, 120)]
        wait_for(lambda: spill_metrics(cl).get("spilled_bytes", 0) > 0 and not spill_metrics(cl).get("error"),
                 30, "the worker to spill again")
        for i, f in enumerate(first):
            assert cl.submit(total, f, pure=False).result(timeout=60) == float(i) * (16 * MiB // 8)
        assert worker_pid(cl) == pid, "the worker was restarted (out of memory): spilling never resumed"


def test_scattered_data_is_never_lost_on_a_full_disk(small_disk, no_pause):
    filler = fill(small_disk)
    limit = 640 * MiB
    with frisky.LocalCluster(n_workers=1, memory_limit=limit) as c, c.get_client() as cl:
        # 448 MiB scattered against a 384 MiB target (and well under the 608 MiB at which the
        # worker would be restarted): what comes after the target goes straight to disk, and
        # the worker acknowledges it before the write fails...
        arrays = [np.arange(4 * MiB // 8, dtype=np.float64) + i for i in range(112)]
        futs = cl.scatter(arrays, hash=False)
        frisky.wait(futs, timeout=60)
        pid = worker_pid(cl)
        wait_for(lambda: spill_metrics(cl).get("spill_failures") or spill_metrics(cl).get("error"), 30,
                 "the worker to report the full disk")
        # ...so it must still have all of it, although the disk is full
        for i, f in enumerate(futs):
            assert np.array_equal(f.result(timeout=60), arrays[i])
        os.unlink(filler)
        for i, f in enumerate(futs):  # and tasks can use them once the disk has room
            assert cl.submit(total, f, pure=False).result(timeout=60) == float(arrays[i].sum())
        more = cl.scatter([a + 1000 for a in arrays[:8]], hash=False)
        for i, f in enumerate(more):
            assert np.array_equal(f.result(timeout=60), arrays[i] + 1000)
        assert worker_pid(cl) == pid, "the worker was restarted: scattered data would be lost"
