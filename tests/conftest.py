"""Shared fixtures, and the leak check that runs after every test.

After each test: no child process it started is still running, no /dev/shm/frisky-*
segment, no private ipc directory and no spill directory it created is left behind.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

import psutil
import pytest

# every scheduler the tests start checks its invariants after each batch of events
os.environ.setdefault("FRISKY_VALIDATE", "1")
# every cluster's dashboard on a free port of its own: tests run clusters side by side
os.environ.setdefault("FRISKY_DASHBOARD_ADDRESS", ":0")

import frisky  # noqa: E402

# A private temp dir for this run (inherited by every process it starts), so the leak
# check sees only this run's files; segments are told apart by the owner pid in the name.
_TMP = tempfile.mkdtemp(prefix="frisky-tests-")
os.environ["TMPDIR"] = _TMP
tempfile.tempdir = None
_SHM = f"/dev/shm/frisky-{os.getpid():x}p*"


def pytest_unconfigure(config):
    """The run's private temp dir goes with it (each test already checked it left nothing)."""
    shutil.rmtree(_TMP, ignore_errors=True)


def _leftovers() -> set[str]:
    tmp = tempfile.gettempdir()
    found = set(glob.glob(_SHM))
    found |= set(glob.glob(os.path.join(tmp, "frisky-ipc-*")))
    found |= set(glob.glob(os.path.join(tmp, "frisky-spill-*")))
    return found


def _is_zygote(p: psutil.Process) -> bool:
    try:
        return "frisky.deploy.zygote" in " ".join(p.cmdline())
    except psutil.Error:
        return False


@pytest.fixture(autouse=True)
def no_leaks(request):
    me = psutil.Process()
    before_children = {p.pid for p in me.children(recursive=True)}
    before_files = _leftovers()
    yield
    # the fork server outlives clusters on purpose (like multiprocessing's forkserver)
    new = [p for p in me.children(recursive=True) if p.pid not in before_children and not _is_zygote(p)]
    # children that were told to stop may need a moment to exit: wait on them, bounded
    _, alive = psutil.wait_procs(new, timeout=5)
    for p in alive:
        p.kill()
    assert not alive, f"test left child processes running: {[p.pid for p in alive]}"
    if "cluster" in request.fixturenames:
        return  # a shared cluster frees released data asynchronously; checked when it closes
    left = _leftovers() - before_files
    assert not left, f"test left files behind: {sorted(left)}"


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, shared by the tests of one module."""
    before = _leftovers()
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1) as c:
        yield c
    left = _leftovers() - before
    assert not left, f"the shared cluster left files behind: {sorted(left)}"


@pytest.fixture
def client(cluster):
    with frisky.Client(cluster) as c:
        yield c


@pytest.fixture(params=[True, False], ids=["processes", "threads"])
def any_client(request):
    """A fresh cluster of each kind, for behaviour that must hold in both."""
    with frisky.LocalCluster(n_workers=2, processes=request.param) as c, c.get_client() as cl:
        yield cl



@pytest.fixture(scope="session", autouse=True)
def nothing_left_at_exit():
    yield
    from frisky.deploy import zygote

    zygote.shutdown()
    me = psutil.Process()
    _, alive = psutil.wait_procs(me.children(recursive=True), timeout=5)
    assert not alive, f"child processes left at the end of the run: {[p.pid for p in alive]}"
    assert not glob.glob(_SHM), "shared-memory segments left at the end of the run"
    leftover = [n for n in os.listdir(_TMP) if not n.startswith("pytest-of-")]
    import shutil

    shutil.rmtree(_TMP, ignore_errors=True)
    assert not leftover, f"temporary files left at the end of the run: {leftover}"


@pytest.fixture
def procs():
    """A list to append started ``subprocess.Popen`` objects to: each is terminated (killed
    after 15 s) when the test ends."""
    import subprocess

    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
    for p in started:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
