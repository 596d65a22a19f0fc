"""A worker's memory: limits, least-recently-used spilling, pausing, unspilling.

Two measures drive it, as in Dask: the bytes of values the store holds (cheap, exact for
buffers) against ``memory_target``, and the process RSS (what the OS sees; estimates
drift) against ``memory_spill`` and ``memory_pause`` — all fractions of the limit.
The policy is :func:`frisky.worker.state.memory_plan` (pure); ``MemoryManager`` measures,
carries out what it says, and keeps the books of what is on disk.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from typing import Any

from frisky import config, procs
from frisky.data import bufpool, dataplane
from frisky.telemetry import count, now, recorder
from frisky.worker.state import memory_plan, over

log = logging.getLogger("frisky.worker")


class MemoryManager:
    """Keeps a worker under its memory limit by spilling values to one spill file."""

    def __init__(self, limit: int | None, *, name: str, store, fetched, shared: dict, registry,
                 wake: Callable[[], None]) -> None:
        """``store``: the values it may spill (a :class:`~frisky.worker.store.Store`); ``fetched``:
        values held for queued tasks (counted, never spilled); ``shared``: keys whose buffers
        live in shared memory (released once on disk) from ``registry``; ``wake``: pokes the
        worker's loop when a write ends."""
        self.name = name
        self.store = store
        self.fetched = fetched
        self.shared = shared
        self.registry = registry
        self.wake = wake
        self.limit = limit
        self.target = config.get("memory_target")
        self.spill_at = config.get("memory_spill")
        self.pause_at = config.get("memory_pause")
        self.file = None
        self.spilled: dict[str, int] = {}  # key -> nbytes, on disk
        self.spilling: dict[str, int] = {}  # key -> nbytes, being written
        self.direct: set[str] = set()  # being written straight from the network
        self.freed: dict[str, list] = {}  # freed while being written: their frames, to release after
        self.lock = threading.RLock()
        self.running = threading.Event()
        self.running.set()
        self.error: BaseException | None = None
        self.pause_started = 0
        self._last_collect = 0

    @property
    def paused(self) -> bool:
        return not self.running.is_set()

    def check(self) -> None:
        """Spill or pause if needed. Cheap when under the limit; call it often."""
        if not self.limit:
            return
        store = self.store
        with self.lock:
            process = procs.rss()
            if process > self.spill_at * self.limit and now() - self._last_collect > 50_000_000:
                # idle receive buffers go before any value does
                bufpool.pool.clear()
                # cycles (tracebacks, frames) can hold big buffers until the next GC pass
                import gc

                gc.collect()
                procs.malloc_trim()
                self._last_collect = now()
                process = procs.rss()
            want, pause = memory_plan(store.nbytes + self.fetched.nbytes, sum(self.spilling.values()),
                                      process, self.limit, self.target, self.spill_at, self.pause_at)
            todo = self._choose(want) if want and self.error is None else []
            self._set_paused(pause or (self.error is not None and procs.rss() > self.pause_at * self.limit))
        # outside the lock: put() may wait for the writer, whose completions take the lock
        for key, bufs, itemsizes in todo:
            self.file.put(key, bufs, itemsizes, self._written)

    def _set_paused(self, pause: bool) -> None:
        if pause and self.running.is_set():
            self.running.clear()
            self.pause_started = now()
        elif not pause and not self.running.is_set():
            recorder.span("worker.paused", self.pause_started)
            self.running.set()

    def _choose(self, want: int) -> list[tuple]:
        """Under the lock: pick least-recently-used values worth ``want`` bytes, mark them
        as being spilled, and return (key, buffers, item sizes) for each."""
        store = self.store
        if not self._open("(spill file)"):
            return []
        todo = []
        freed = 0
        for key in list(store.data):  # least recently used first
            if freed >= want:
                break
            if key in self.spilling:
                continue
            frames = self.shared.get(key)
            if frames is None:
                frames = dataplane.dumps(store.data[key])
            nbytes = store.sizes.get(key, 0)
            self.spilling[key] = nbytes
            # views of our own: they keep a segment's mapping alive whatever happens to its
            # Segment object while the write is queued
            bufs = [memoryview(b) for b in dataplane.views(frames)]
            todo.append((key, bufs, getattr(frames, "itemsizes", None)))
            freed += nbytes
        return todo

    def _open(self, key: str) -> bool:
        """Under the lock: the spill file, created on first use; False if it cannot be
        (reported as a failure to spill ``key``)."""
        if self.file is None:
            from frisky.spill import SpillError, SpillFile

            try:
                self.file = SpillFile(name=self.name, compression=None)
            except SpillError as e:
                self._failed(key, e)
                return False
        return True

    def _written(self, key: str, error: BaseException | None) -> None:
        """On the spill writer's thread: the value is on disk (or failed to get there)."""
        with self.lock:
            nbytes = self.spilling.pop(key, None)
            if nbytes is None:
                return
            frames = self.freed.pop(key, None)
            if frames is not None:  # freed while being written: now nobody reads its buffers
                dataplane.release(frames, self.registry)
                if error is None:
                    self.file.delete(key)
                return
            if error is not None:
                self._failed(key, error)
                return
            direct = key in self.direct
            self.direct.discard(key)
            if direct:  # written straight from the network: nothing in memory to drop
                self.spilled[key] = nbytes
                return
            if key not in self.store:  # freed meanwhile
                self.file.delete(key)
                return
            self.spilled[key] = nbytes
            self.store.pop(key)
            frames = self.shared.pop(key, None)
            if frames is not None:
                dataplane.release(frames, self.registry)
            count("spill.bytes_spilled", nbytes)
        self.wake()  # re-check: maybe resume

    def _failed(self, key: str, error: BaseException) -> None:
        # keep the value in memory; after a disk error stop spilling, and pause while memory
        # stays high (tasks that cannot start then fail with a clear MemoryError)
        if not isinstance(error, OSError) or getattr(error, "errno", None) == errno.ECANCELED:
            log.warning("worker %s: spilling %r failed: %r; kept in memory", self.name, key, error)
            return
        if self.error is None:
            log.error("worker %s cannot spill %r: %s; keeping values in memory", self.name, key, error)
        self.error = error

    def forget(self, key: str) -> bool:
        """The value of ``key`` is freed. True if its buffers must stay until a write ends."""
        with self.lock:
            if key in self.spilling and key not in self.direct:
                frames = self.shared.pop(key, None)
                if frames is not None:
                    self.freed[key] = frames
                return True
            if self.spilled.pop(key, None) is not None:
                self.file.delete(key)
            return False

    def has(self, key: str) -> bool:
        return key in self.spilled or (key in self.spilling and key not in self.store)

    def headroom(self, adding: int) -> bool:
        """Whether ``adding`` more bytes keep held values under half the spill target."""
        return not over(self.store.nbytes + self.fetched.nbytes + adding, self.limit, 0.5 * self.target)

    def over_target(self, adding: int = 0) -> bool:
        """Whether held values (plus ``adding`` more bytes) exceed the spill target."""
        return over(self.store.nbytes + self.fetched.nbytes + adding, self.limit, self.target)

    def put_frames(self, key: str, frames: list, nbytes: int) -> bool:
        """Write an incoming value straight to disk (the worker is over its target).
        Returns False if it cannot (the caller then keeps it in memory)."""
        with self.lock:
            if self.error is not None:
                return False
            if not self._open(key):
                return False
            self.spilling[key] = nbytes
            self.direct.add(key)
        self.file.put(key, frames, None, self._written)
        return True

    def unspill(self, key: str) -> Any:
        """Read a spilled value back into memory (and forget its copy on disk)."""
        if key in self.spilling:
            self.file.flush()
        with self.lock:
            frames = self.file.get(key)
            value = dataplane.loads(frames)
            nbytes = self.spilled.get(key, 0)
            count("spill.bytes_unspilled", nbytes)
            store = self.store
            if over(store.nbytes + self.fetched.nbytes + nbytes, self.limit, self.target):
                return value  # no room: lend it to the task, keep the copy on disk
            del self.spilled[key]
            self.file.delete(key)
            store.put(key, value, nbytes)
        self.check()  # on the reading thread itself: the loop's timer may be too late
        return value

    def frames(self, key: str) -> list:
        """A spilled value's serialized frames for a peer, without unspilling it: raw frames
        are mapped from the spill file, not read into this process's memory."""
        return self.file.map_frames(key)

    def discard(self, key: str) -> None:
        with self.lock:
            if self.spilled.pop(key, None) is not None:
                self.file.delete(key)

    def wait_until_running(self) -> None:
        """Block an executor thread while the worker is paused (returns at once otherwise).

        Raises MemoryError when spilling has failed and memory stays above the pause
        threshold: the task cannot start, and waiting would never end.
        """
        while not self.running.wait(0.1):
            self.check()
            if self.error is not None and not self.running.is_set():
                raise MemoryError(
                    f"worker {self.name} is above {self.pause_at:.0%} of its memory limit "
                    f"({self.limit} bytes) and cannot spill to disk: {self.error}")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def stats(self) -> dict:
        out = {"spilled_keys": len(self.spilled), "spilled_bytes": sum(self.spilled.values()),
               "paused": self.paused, "error": repr(self.error) if self.error else None}
        if self.file is not None:
            out["spill"] = self.file.stats
        return out
