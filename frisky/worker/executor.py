"""Executor threads: run batches of tasks and hand each result back to the worker's loop.

Results go back through a deque and the worker's :class:`~frisky.zmq.sockets.Waker`, one by
one as they are ready, so no result waits behind a long task. Calls of a function whose
recent calls were all tiny run on the loop thread itself when nothing else is queued:
two thread handoffs would cost more than the call.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from frisky.data.deps import substitute
from frisky.data.serialize import format_exception
from frisky.telemetry import recorder
from frisky.worker.store import sizeof

if TYPE_CHECKING:
    from frisky.worker.server import Worker


class Executor:
    """Threads that run batches of tasks and hand results back to the loop."""

    def __init__(self, worker: Worker, nthreads: int) -> None:
        self.worker = worker
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.done: collections.deque = collections.deque()
        self.active = False  # a batch is running
        self.functions: dict[bytes, Any] = {}
        self.streak: dict[bytes, int] = {}  # fid -> calls in a row that took under _FAST_NS
        self.threads = [
            threading.Thread(target=self._run, name=f"frisky-exec-{i}", daemon=True) for i in range(nthreads)
        ]
        for t in self.threads:
            t.start()

    def submit(self, tasks: list) -> None:
        """Run ``tasks``: here and now when they are known to be tiny (see :meth:`fast`),
        else on the executor threads. Called on the loop thread."""
        if self.fast(tasks):
            self.run_batch(tasks, None)
            return
        n = len(self.threads)
        if n == 1 or len(tasks) <= 1:
            self.queue.put(tasks)
            return
        step = max(1, -(-len(tasks) // (n * 4)))
        for i in range(0, len(tasks), step):
            self.queue.put(tasks[i:i + step])

    def stop(self) -> None:
        for _ in self.threads:
            self.queue.put(None)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _function(self, fid: bytes, blob: bytes):
        fn = self.functions.get(fid)
        if fn is None:
            fn = self.worker.codec.loads_function(blob)
            if self.worker.codec.local:
                return fn  # a handle lookup is as cheap as a cache, and pins nothing
            if len(self.functions) > 1000:
                self.functions.clear()
            self.functions[fid] = fn
        return fn

    def _run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            self.run_batch(batch, self.worker.waker.wake)

    def fast(self, tasks: list) -> bool:
        """Whether ``tasks`` may run right here on the loop thread: nothing else is queued,
        and each function's recent calls all took under ``_FAST_NS`` (a handoff to an executor
        thread and back costs more than such a call)."""
        if self.active or not self.queue.empty() or len(tasks) > _FAST_BATCH:
            return False
        streak = self.streak
        for task in tasks:
            if streak.get(task[2], 0) < _FAST_STREAK:
                return False
        return True

    def run_batch(self, batch: list, wake) -> None:
        """Run ``batch`` on this thread, appending each outcome to ``done``; ``wake`` (if any)
        pokes the loop as results pile up."""
        worker = self.worker
        codec = worker.codec
        cancelled = worker.state.cancelled
        loads_args = codec.loads_args
        dumps_value = codec.dumps_value
        done = self.done
        streak = self.streak
        perf = time.perf_counter_ns
        record = recorder.span
        add = recorder.add
        n_de = t_de = t_ser = 0
        running = worker.memory.running
        self.active = True  # the loop polls every millisecond meanwhile (see _loop)
        last_wake = perf()
        for task in batch:
            # results go to the loop one by one; wake it at most every millisecond, and
            # since it also looks every millisecond while we are active, no result
            # waits behind a long task
            if wake is not None and done and perf() - last_wake > 1_000_000:
                wake()
                last_wake = perf()
            tid, key, fid, payload, deps, ctx = task
            if tid in cancelled:
                done.append((2, task))
                continue
            t0 = perf()
            try:
                if not running.is_set():  # over the pause threshold: wait for memory to fall
                    worker.memory.wait_until_running()
                fn = self._function(fid, ctx["fns"][fid])
                args, kwargs = loads_args(payload)
                if deps:
                    args, kwargs = substitute(args, kwargs, self._dep_values(deps, ctx))
                t1 = perf()
                result = fn(*args, **kwargs)
                t2 = perf()
                streak[fid] = streak.get(fid, 0) + 1 if t2 - t1 < _FAST_NS else 0
                if type(result) in _SMALL or sizeof(result) < worker.inline_threshold * 4:
                    blob = dumps_value(result)
                else:
                    blob = None
                if type(blob) is bytes:
                    nbytes = len(blob)
                else:
                    nbytes = worker.keep(key, result)
                    blob = None
                t3 = perf()
                # one raw span per call; (de)serialization is summed per batch
                record("worker.exec.call", t1, key.partition("-")[0], t2)
                n_de += 1
                t_de += t1 - t0
                t_ser += t3 - t2
                done.append((0, task, nbytes, blob, (t2 - t1) / 1e9))
            except BaseException as e:  # noqa: BLE001 - user code may raise anything
                streak[fid] = 0
                done.append((1, task, codec.dumps_exception(e), format_exception(e)))
            # hold no reference to user objects while waiting for the next batch
            fn = args = kwargs = result = blob = None
        batch = task = ctx = payload = None
        self.active = False
        if wake is not None:
            wake()
        if n_de:
            add("worker.deserialize", n_de, t_de)
            add("worker.serialize", n_de, t_ser)

    def _dep_values(self, deps: list[str], ctx: dict) -> dict[str, Any]:
        worker = self.worker
        inline = ctx["inline"]
        decoded = ctx["decoded"]
        values = {}
        for k in deps:
            if k in decoded:
                values[k] = decoded[k]
            elif k in inline:
                values[k] = decoded[k] = worker.codec.loads_value(inline[k])
            elif k in worker.state.fetched:
                values[k] = worker.state.fetched[k]
            else:
                values[k] = worker.value(k)
        return values



# inline on the loop thread: a function whose last _FAST_STREAK calls each took under
# _FAST_NS, in batches of at most _FAST_BATCH (a few ms at most, so peers and heartbeats
# wait little; one that turns slow after such a streak still blocks the loop that once)
_FAST_NS = 100_000
_FAST_STREAK = 16
_FAST_BATCH = 64
_SMALL = frozenset({int, float, bool, type(None), complex})
