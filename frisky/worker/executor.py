"""Executor threads: run batches of tasks and report each outcome to the worker's loop.

Outcomes (:class:`~frisky.worker.state.Ran`, ``Failed``, ``Skipped``) go back through a
deque and a wake-up call, one by one as they are ready, so no result waits behind a long
task; the loop feeds them to the :class:`~frisky.worker.state.WorkerState`. The threads
never read that state. Batches the state marks as tiny run on the loop thread itself
(:meth:`Executor.run`), their outcomes in a deque of their own.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from frisky import protocol
from frisky.data.deps import substitute
from frisky.data.serialize import format_exception
from frisky.telemetry import recorder
from frisky.worker.state import Batch, Execute, Failed, Ran, Skipped, Task, try_inline
from frisky.worker.store import sizeof

# functions kept unpickled per worker: past this many the cache starts afresh (a map over
# ever-new lambdas must not pin them all)
_FUNCTIONS_KEPT = 1000
# while results pile up on a thread, wake the loop at most this often (ns); it also polls
# this often while a batch runs, so no result waits behind a long task
_WAKE_NS = 1_000_000


class Executor:
    """Threads that run batches of tasks and hand their outcomes back to the loop.

    ``inline_threshold``: results under it travel inline; ``keep(key, value) -> nbytes`` holds a result too large to travel inline,
    and ``ref(key)`` (optional) gives a held result's same-host reference or None; ``value(key)``
    reads an input held on this worker; ``memory`` is the worker's
    :class:`~frisky.worker.memory.MemoryManager` (tasks wait while it pauses); ``wake``
    pokes the loop.
    """

    def __init__(self, nthreads: int, codec, *, inline_threshold: int, keep: Callable[[str, Any], int],
                 value: Callable[[str], Any], memory, wake: Callable[[], None],
                 ref: Callable[[str], bytes | None] | None = None) -> None:
        self.codec = codec
        self.keep = keep
        self.ref = ref
        self.value = value
        self.memory = memory
        self.wake = wake
        self.inline_threshold = inline_threshold
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.done: collections.deque = collections.deque()  # outcomes from the threads
        self.here: collections.deque = collections.deque()  # outcomes of batches run on the loop
        self.skip: set[int] = set()  # tids cancelled after they were handed over
        self.active = False  # a batch is running
        self.functions: dict[bytes, Any] = {}
        # per thread (ident): (key, perf_counter_ns start) of the task it runs now, for telemetry
        self.current: dict[int, tuple] = {}
        self.threads = [
            threading.Thread(target=self._run, name=f"frisky-exec-{i}", daemon=True) for i in range(nthreads)
        ]
        for t in self.threads:
            t.start()

    def run(self, ins: Execute) -> None:
        """Carry out ``Execute``: here and now on the calling (loop) thread, or on the threads."""
        tasks = ins.tasks
        if ins.here:
            self.run_batch(tasks, self.here, None)
            return
        n = len(self.threads)
        if n == 1 or len(tasks) <= 1:
            self.queue.put(tasks)
            return
        step = max(1, -(-len(tasks) // (n * 4)))
        for i in range(0, len(tasks), step):
            self.queue.put(tasks[i:i + step])

    def stop(self, drop_queued: bool = False) -> None:
        """End the threads after what they run now, and after the queued batches too unless
        ``drop_queued`` (nobody wants their results: the scheduler that sent them is gone)."""
        if drop_queued:
            try:
                while True:
                    self.queue.get_nowait()
            except queue.Empty:  # drained (a thread may have taken the last batch meanwhile)
                pass
        for _ in self.threads:
            self.queue.put(None)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _function(self, fid: bytes, blob: bytes):
        fn = self.functions.get(fid)
        if fn is None:
            if not self.codec.local and protocol.function_id(blob) != fid:
                raise ValueError(f"function blob does not match its id {fid.hex()}: refused")
            fn = self.codec.loads_function(blob)
            if self.codec.local:
                return fn  # a handle lookup is as cheap as a cache, and pins nothing
            if len(self.functions) > _FUNCTIONS_KEPT:
                self.functions.clear()
            self.functions[fid] = fn
        return fn

    def _run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            self.run_batch(batch, self.done, self.wake)

    def run_batch(self, batch: list[Task], done: collections.deque, wake: Callable[[], None] | None) -> None:
        """Run ``batch`` on this thread, appending each outcome to ``done``; ``wake`` (if any)
        pokes the loop as results pile up."""
        codec = self.codec
        skip = self.skip
        loads_args = codec.loads_args
        dumps_value = codec.dumps_value
        threshold = self.inline_threshold
        keep = self.keep
        ref_of = self.ref
        perf = time.perf_counter_ns
        record = recorder.span
        call = recorder.call
        add = recorder.add
        new = tuple.__new__  # builds a Ran without the namedtuple's Python-level __new__ (per call)
        n_de = t_de = t_ser = 0
        memory = self.memory
        running = memory.running
        current = self.current
        me = threading.get_ident()
        self.active = True  # the loop polls every millisecond meanwhile (see Worker._loop)
        last_wake = perf()
        for task in batch:
            # results go to the loop one by one; wake it at most every _WAKE_NS
            if wake is not None and done and perf() - last_wake > _WAKE_NS:
                wake()
                last_wake = perf()
            tid, key, fid, payload, deps, tb = task
            if skip and tid in skip:
                skip.discard(tid)
                done.append(Skipped(task))
                continue
            t0 = perf()
            current[me] = (key, t0)
            try:
                if not running.is_set():  # over the pause threshold: wait for memory to fall
                    memory.wait_until_running()
                fn = self._function(fid, tb.fns[fid])
                args, kwargs = loads_args(payload)
                if deps:
                    args, kwargs = substitute(args, kwargs, self._dep_values(deps, tb))
                t1 = perf()
                result = fn(*args, **kwargs)
                t2 = perf()
                blob = dumps_value(result) if try_inline(result, sizeof, threshold) else None
                ref = None
                if type(blob) is bytes:
                    nbytes = len(blob)
                else:
                    nbytes = keep(key, result)
                    blob = None
                    if ref_of is not None:
                        ref = ref_of(key)
                t3 = perf()
                # one raw span per call; (de)serialization is summed per batch
                call(key.partition("-")[0], t1, t2, nbytes)
                n_de += 1
                t_de += t1 - t0
                t_ser += t3 - t2
                done.append(new(Ran, (task, nbytes, blob, (t2 - t1) / 1e9, ref)))
            except BaseException as e:  # noqa: BLE001 - user code may raise anything
                done.append(Failed(task, codec.dumps_exception(e), format_exception(e)))
                record("worker.exec.error", t0, key.partition("-")[0])
            # hold no reference to user objects while waiting for the next batch
            fn = args = kwargs = result = blob = ref = None
        batch = task = tb = payload = None
        current.pop(me, None)
        self.active = False
        if wake is not None:
            wake()
        if n_de:
            add("worker.deserialize", n_de, t_de)
            add("worker.serialize", n_de, t_ser)

    def _dep_values(self, deps: list[str], batch: Batch) -> dict[str, Any]:
        inline = batch.inline
        decoded = batch.decoded
        values = {}
        for k in deps:
            if k in decoded:
                values[k] = decoded[k]
            elif k in inline:
                values[k] = decoded[k] = self.codec.loads_value(inline[k])
            else:
                values[k] = self.value(k)
        return values
