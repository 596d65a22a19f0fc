"""The scheduler's sans-I/O state machine alone: no sockets, no pickling, no processes.

Simulated workers answer every ``compute`` instruction at once with ``finished``
(inline result ``b"x"``); the simulated client submits in batches of 10,000 as
``Client.map`` does and releases each result as it arrives. Rows: independent tasks,
a tree reduction, and the memory held per pending task.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import pytest

from frisky.data.serialize import PickleCodec
from frisky.scheduler.instructions import Compute, Erred, Results
from frisky.scheduler.state import SchedulerState

# pyproject's 60 s test timeout is too short for a few rounds on a busy machine
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def scheduler_process_gc():
    """The GC settings of a scheduler process (``frisky scheduler``), restored afterwards."""
    import gc

    from frisky.scheduler.server import tune_gc

    before = gc.get_threshold()
    tune_gc()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)

N_INDEPENDENT = 200_000
N_LEAVES = 100_000
N_PENDING = 1_000_000
N_TRACED = 100_000
BATCH = 10_000  # tasks per `submit` message, as the client sends them
CID = 1
FID_NOOP = hashlib.blake2b(b"noop", digest_size=16).digest()
FID_INC = hashlib.blake2b(b"inc", digest_size=16).digest()
FID_ADD = hashlib.blake2b(b"add", digest_size=16).digest()
FN_BLOB = b"\x80\x05" + b"f" * 60  # stands in for a pickled function (opaque to the scheduler)


def make_keys(prefix: str, start: int, n: int) -> list[str]:
    """Keys shaped like the client's pure keys: ``name-<32 hex digits>``."""
    return [f"{prefix}-{i:032x}" for i in range(start, start + n)]


def make_payloads(start: int, n: int) -> list[bytes]:
    dumps = PickleCodec().dumps_args
    return [dumps((i,), None) for i in range(start, start + n)]


class SimCluster:
    """A SchedulerState, one client and ``n_workers`` simulated workers that finish every
    task the moment they are sent it. The client releases each result on arrival, except
    for keys it still holds (``hold``), as a user keeps futures it will pass on."""

    def __init__(self, n_workers: int = 2) -> None:
        self.state = SchedulerState()
        self.state.add_client(CID)
        self.workers = [self.state.add_worker({"address": f"sim://w{i}", "name": f"w{i}", "nthreads": 1})
                        for i in range(n_workers)]
        self.n_results = 0
        self.n_computed = 0
        self.held: set[str] = set()  # keys the user still holds futures of
        self.arrived: set[str] = set()  # results of held keys, not released yet

    def hold(self, keys) -> None:
        self.held.update(keys)

    def drop(self, keys) -> None:
        """The user dropped these futures: release those whose results arrived (the others
        are released when they arrive)."""
        self.held.difference_update(keys)
        now = [k for k in keys if k in self.arrived]
        if now:
            self.arrived.difference_update(now)
            self.state.release(CID, now)

    def pump(self) -> int:
        """One scheduler-loop turn: flush; workers finish what they were sent; the client
        takes its results and releases those it does not hold. Returns the number of
        instructions."""
        state = self.state
        out = state.flush()
        for ins in out:
            kind = type(ins)
            if kind is Compute:
                w, tids, fids = ins.worker, ins.tids, ins.fids
                n = len(tids)
                self.n_computed += n
                timings = [(fids[0], n, n * 1e-6)] if len(fids) == 1 else None
                state.finished(w, tids, [1] * n, [b"x"] * n, timings)
            elif kind is Results:
                keys = ins.keys
                self.n_results += len(keys)
                if self.held:
                    held = self.held
                    self.arrived.update(k for k in keys if k in held)
                    keys = [k for k in keys if k not in held]
                state.release(ins.client, keys)
            elif kind is Erred:
                raise AssertionError(f"tasks erred: {ins.keys[:3]} {ins.excs[:3]}")
        return len(out)

    def drain(self, expect_results: int) -> None:
        while self.n_results < expect_results:
            if not self.pump():
                raise AssertionError(f"stalled: {self.n_results}/{expect_results} results, "
                                     f"states {self.state.state_counts()}")


# ----------------------------------------------------------------------- row 5
def test_state_independent(benchmark, record):
    """Row 5: 200k independent tasks through SchedulerState, 2 simulated workers."""
    keys = make_keys("noop", 0, N_INDEPENDENT)
    payloads = make_payloads(0, N_INDEPENDENT)
    times = []
    sims = []

    def setup():
        sims.clear()
        sims.append(SimCluster(2))
        gc.collect()

    def run():
        sim = sims[0]
        state = sim.state
        t0 = time.perf_counter()
        for i in range(0, N_INDEPENDENT, BATCH):
            state.submit(CID, keys[i:i + BATCH], 0, [FID_NOOP], [FN_BLOB], payloads[i:i + BATCH])
            sim.pump()
        sim.drain(N_INDEPENDENT)
        times.append(time.perf_counter() - t0)
        assert sim.n_computed == N_INDEPENDENT
        assert state.counts["finished"] == N_INDEPENDENT
        assert not state.key_tid, "every released task should be forgotten"

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    record(tasks=N_INDEPENDENT, tasks_per_s=N_INDEPENDENT / statistics.median(times),
           best_tasks_per_s=N_INDEPENDENT / min(times))


# ----------------------------------------------------------------------- row 6
def tree_graph(n_leaves: int):
    """The steps of a pairwise tree reduction, as a user's code would do them:
    ``("submit", keys, fid, payloads, deps)`` in batches (a layer after the one it
    depends on), and ``("drop", keys)`` once the next layer is submitted
    (``layer = nxt``). Returns (steps, number of tasks, root key)."""
    steps = []
    layer = make_keys("inc", 0, n_leaves)
    pay = make_payloads(0, n_leaves)
    for i in range(0, n_leaves, BATCH):
        steps.append(("submit", layer[i:i + BATCH], FID_INC, pay[i:i + BATCH], None))
    seq = n_leaves
    n_tasks = n_leaves
    add_payload = b"\x80\x05\x95add-args"  # opaque: two dependency references
    while len(layer) > 1:
        nxt = make_keys("add", seq, len(layer) // 2)
        seq += len(nxt)
        n_tasks += len(nxt)
        deps = [[layer[2 * j], layer[2 * j + 1]] for j in range(len(nxt))]
        for i in range(0, len(nxt), BATCH):
            chunk = nxt[i:i + BATCH]
            steps.append(("submit", chunk, FID_ADD, [add_payload] * len(chunk), deps[i:i + BATCH]))
        if len(layer) % 2:
            nxt.append(layer[-1])  # carried over to the next layer: still held
        steps.append(("drop", layer[:len(layer) - len(layer) % 2]))
        layer = nxt
    return steps, n_tasks, layer[0]


def test_state_tree(benchmark, record):
    """Row 6: a 100,000-leaf tree reduction (submit with deps) through SchedulerState."""
    steps, n_tasks, root = tree_graph(N_LEAVES)
    times = []
    sims = []

    def setup():
        sims.clear()
        sims.append(SimCluster(2))
        gc.collect()

    def run():
        sim = sims[0]
        state = sim.state
        t0 = time.perf_counter()
        for step in steps:
            if step[0] == "submit":
                _, keys, fid, payloads, deps = step
                sim.hold(keys)
                state.submit(CID, keys, 0, [fid], [FN_BLOB], payloads, deps)
                sim.pump()
            else:
                sim.drop(step[1])
        sim.drain(n_tasks)
        sim.drop([root])
        times.append(time.perf_counter() - t0)
        assert sim.n_computed == n_tasks
        assert state.counts["finished"] == n_tasks and state.counts["erred"] == 0
        assert not state.key_tid

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    record(leaves=N_LEAVES, tasks=n_tasks, tasks_per_s=n_tasks / statistics.median(times),
           best_tasks_per_s=n_tasks / min(times))


# ---------------------------------------------------------------------- row 11
def submit_pending(state: SchedulerState, n: int) -> None:
    """Submit ``n`` tasks in batches; keys and payloads are made batch by batch, as the
    server unpacks them from each message, so what the state keeps is all it holds."""
    for i in range(0, n, BATCH):
        m = min(BATCH, n - i)
        state.submit(CID, make_keys("noop", i, m), 0, [FID_NOOP], [FN_BLOB], make_payloads(i, m))


_RSS_SCRIPT = """
import gc, json, sys, psutil
sys.path.insert(0, sys.argv[2])
from bench_scheduler import CID, submit_pending
from frisky.scheduler.state import SchedulerState
n = int(sys.argv[1])
gc.collect()
p = psutil.Process()
before = p.memory_info().rss
s = SchedulerState()
s.add_client(CID)
submit_pending(s, n)
gc.collect()
after = p.memory_info().rss
assert len(s.key_tid) == n and len(s.queues.common) == n
print(json.dumps({"rss_delta": after - before}))
"""


def test_state_memory_pending(benchmark, record):
    """Row 11: bytes SchedulerState holds per pending task (no workers): the RSS growth of
    a fresh process submitting 1M tasks (the headline figure), and the bytes tracemalloc
    sees for 100k tasks (exact, but tracing makes 1M too slow)."""
    figures = {}

    def run():
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(N_PENDING), os.path.dirname(__file__)],
                             capture_output=True, text=True, timeout=300)
        dt = time.perf_counter() - t0
        assert out.returncode == 0, out.stderr
        rss = json.loads(out.stdout.strip().splitlines()[-1])["rss_delta"]

        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            state = SchedulerState()
            state.add_client(CID)
            submit_pending(state, N_TRACED)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert state.state_counts() == {"queued": N_TRACED}
        # of which: the key strings and payload bytes themselves (the client's data)
        user = sys.getsizeof(make_keys("noop", N_PENDING, 1)[0]) + sys.getsizeof(make_payloads(N_PENDING, 1)[0])
        figures.update(tasks=N_PENDING, rss_bytes_per_task=rss / N_PENDING,
                       traced_bytes_per_task=held / N_TRACED,
                       key_and_payload_bytes_per_task=user, subprocess_s=dt)

    benchmark.pedantic(run, rounds=1, iterations=1)
    record(**figures)
