"""No ``/tmp/frisky-ipc-*``, segment or spill directory after any exit of the user's process:
exiting without closing, SIGTERM, and SIGKILL (swept by the next start at the latest)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile

import psutil
import pytest

SCRIPT = """
import sys, time, frisky
kind = sys.argv[1]
if kind == "client":
    c = frisky.Client(n_workers=2)
else:
    cluster = frisky.LocalCluster(n_workers=2)
    c = cluster.get_client()
import numpy as np
x = c.submit(np.ones, 1_000_000)  # a value in shared memory
x.result(timeout=30)
print("ready", flush=True)
if sys.argv[2] == "wait":
    time.sleep(120)  # killed by the test meanwhile
"""


def _ours(tmp: str) -> set[str]:
    return set(glob.glob(os.path.join(tmp, "frisky-ipc-*"))) | set(glob.glob(os.path.join(tmp, "frisky-spill-*")))


def _shm(pid: int) -> list[str]:
    return glob.glob(f"/dev/shm/frisky-{pid:x}p*")


def _run(kind: str, how: str) -> tuple[int, set[str]]:
    tmp = tempfile.gettempdir()
    before = _ours(tmp)
    env = dict(os.environ, FRISKY_TEST_OWNER="x")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, kind, "wait" if how != "exit" else "exit"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        elif how == "sigkill":
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # what the script started (the fork server, the scheduler, the workers) ends by itself
    left = [p for p in psutil.process_iter(["environ"]) if (p.info["environ"] or {}).get("FRISKY_TEST_OWNER") == "x"]
    _, alive = psutil.wait_procs(left, timeout=20)
    for p in alive:
        p.kill()
    assert not alive, f"processes of the dead script still running: {alive}"
    return proc.pid, _ours(tmp) - before


@pytest.mark.parametrize("kind", ["cluster", "client"])
@pytest.mark.parametrize("how", ["exit", "sigterm", "sigkill"])
def test_nothing_left_after_the_script_ends(kind, how):
    pid, left = _run(kind, how)
    assert not left, f"left behind after {how}: {sorted(left)}"
    assert not _shm(pid)


def test_a_new_cluster_sweeps_what_a_killed_one_left():
    """Should the fork server die with its parent (both SIGKILLed), the next start sweeps."""
    from frisky.zmq import sockets

    tmp = tempfile.gettempdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tempfile.mkdtemp(prefix=f"frisky-ipc-{dead.pid}-")
    mine = sockets.private_ipc_dir()
    try:
        import frisky

        with frisky.LocalCluster(n_workers=1):
            assert not os.path.exists(orphan)
            assert os.path.exists(mine), "a live owner's directory is kept"
    finally:
        sockets.remove_dir(mine)
        sockets.remove_dir(orphan)
    assert not _ours(tmp) - {orphan}
