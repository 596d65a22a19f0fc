"""The worker's executor alone: real threads and real pickling, no sockets, no WorkerState.

Its threads report outcomes (Ran / Failed / Skipped) to a deque and wake the loop; the
state machine learns of them only when the loop feeds them in."""

from __future__ import annotations

import threading
import time

from frisky import protocol
from frisky.data.serialize import PickleCodec
from frisky.worker.executor import Executor
from frisky.worker.memory import MemoryManager
from frisky.worker.state import Batch, Execute, Failed, Ran, Skipped, Task, WorkerState
from frisky.worker.store import Store


def inc(x):
    return x + 1


def boom(x):
    raise ValueError(f"boom {x}")


def ident(_):
    return threading.get_ident()


def big(n):
    return b"x" * n


def executor(nthreads=2):
    codec = PickleCodec()
    store = Store()
    woken = threading.Event()

    def keep(key, value):
        store.put(key, value, len(value))
        return len(value)

    memory = MemoryManager(None, name="t", store=store, fetched=Store(), shared={}, registry=None,
                           wake=woken.set)
    ex = Executor(nthreads, codec, inline_threshold=4096, keep=keep, value=store.get, memory=memory,
                  wake=woken.set)
    return ex, codec, store, woken


def tasks_for(codec, fn, args, start=0):
    blob = codec.dumps_function(fn)
    fid = protocol.function_id(blob)  # workers check a blob against its id
    b = Batch({}, {fid: blob})
    return [Task(start + i, f"{fn.__name__}-{i}", fid, codec.dumps_args((a,), None), None, b)
            for i, a in enumerate(args)]


def collect(ex, n, woken, timeout=30):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert woken.wait(max(0.0, deadline - time.monotonic())), f"only {len(out)} of {n} outcomes"
        woken.clear()
        while ex.done:
            out.append(ex.done.popleft())
    return out


def test_threads_report_named_outcomes_and_the_state_learns_them_from_the_loop():
    ex, codec, store, woken = executor()
    try:
        s = WorkerState()
        ok = tasks_for(codec, inc, range(20))
        bad = tasks_for(codec, boom, [1], start=100)
        large = tasks_for(codec, big, [100_000], start=200)
        (run,) = s.compute(ok + bad + large, {}, lambda k: False)
        assert run.here is False and s.threaded == 22
        ex.run(run)
        outcomes = collect(ex, 22, woken)
        assert s.threaded == 22, "the threads never touched the state"
        ran = {o.task.tid: o for o in outcomes if type(o) is Ran}
        assert {tid: codec.loads_value(ran[tid].blob) for tid in range(20)} == {i: i + 1 for i in range(20)}
        (failed,) = [o for o in outcomes if type(o) is Failed]
        assert isinstance(codec.loads_exception(failed.blob), ValueError) and "boom 1" in failed.traceback
        assert ran[200].blob is None and ran[200].nbytes == 100_000 and "big-0" in store, "large: kept here"
        out = s.finished([], outcomes)
        assert s.threaded == 0 and not s.executing
        assert sorted(out[0].tids) == [*range(20), 200] and out[1].tids == [100]
    finally:
        ex.stop()
        ex.join(5)


def test_a_skipped_task_is_reported_not_run():
    ex, codec, _, woken = executor(nthreads=1)
    try:
        ts = tasks_for(codec, inc, [1, 2])
        ex.skip.add(ts[0].tid)
        ex.run(Execute(ts, here=False))
        outcomes = collect(ex, 2, woken)
        assert [type(o) for o in sorted(outcomes, key=lambda o: o.task.tid)] == [Skipped, Ran]
        assert not ex.skip
    finally:
        ex.stop()
        ex.join(5)


def test_a_batch_marked_here_runs_on_the_calling_thread():
    ex, codec, _, _ = executor(nthreads=1)
    try:
        ex.run(Execute(tasks_for(codec, ident, [None]), here=True))
        # no wait: it ran before run() returned, its outcome in the loop's own deque
        (o,) = ex.here
        assert type(o) is Ran and codec.loads_value(o.blob) == threading.get_ident()
        assert not ex.done
    finally:
        ex.stop()
        ex.join(5)
