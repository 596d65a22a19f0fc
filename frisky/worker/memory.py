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
_MISSING = object()


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
        # being written straight from the network, acknowledged to the sender already: their
        # frames, kept until the write succeeds (or taken into the store if it fails)
        self.direct: dict[str, list] = {}
        self.freed: dict[str, list] = {}  # freed while being written: their frames, to release after
        self.lock = threading.RLock()
        self._settled = threading.Condition(self.lock)  # notified when a write ends
        self.running = threading.Event()
        self.running.set()
        # the last spill error (disk full, ...), None once a write succeeds again; meanwhile
        # spilling is retried with back-off (``_retry_at``), not given up
        self.error: BaseException | None = None
        self.failures = 0  # writes failed with a disk error, ever
        self._retry_min = config.get("spill_retry_min")
        self._retry_max = config.get("spill_retry_max")
        self._backoff = self._retry_min
        self._retry_at = 0
        self.pause_started = 0
        self._last_collect = 0
        self.arena = None  # the worker's shared-memory arena, once it has one

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
                if self.arena is not None:  # and the arena's free pages
                    self.arena.trim()
                # cycles (tracebacks, frames) can hold big buffers until the next GC pass
                import gc

                gc.collect()
                procs.malloc_trim()
                self._last_collect = now()
                process = procs.rss()
            want, pause = memory_plan(store.nbytes + self.fetched.nbytes, sum(self.spilling.values()),
                                      process, self.limit, self.target, self.spill_at, self.pause_at)
            todo = self._choose(want) if want and self._may_spill() else []
            self._set_paused(pause or (self.error is not None and procs.rss() > self.pause_at * self.limit))
        # outside the lock: put() may wait for the writer, whose completions take the lock
        for key, bufs, itemsizes in todo:
            self.file.put(key, bufs, itemsizes, self._written)

    def _may_spill(self) -> bool:
        """Under the lock: whether to start spill writes now (after an error: once per back-off)."""
        if self.error is None:
            return True
        t = now()
        if t < self._retry_at:
            return False
        # one attempt per back-off period; it clears the error if the disk has room again
        self._retry_at = t + int(self._backoff * 1e9)
        self._backoff = min(self._backoff * 2, self._retry_max)
        return True

    def _open(self, key: str) -> bool:
        """Under the lock: make sure the spill file exists; False (error noted) if it cannot."""
        if self.file is None:
            from frisky.spill import SpillError, SpillFile

            try:
                self.file = SpillFile(name=self.name, compression=None)
            except SpillError as e:
                self._failed(key, e)
                return False
        return True

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

    def _written(self, key: str, error: BaseException | None) -> None:
        """On the spill writer's thread: the value is on disk (or failed to get there)."""
        with self._settled:
            try:
                self._settle(key, error)
            finally:
                self._settled.notify_all()
        self.wake()  # re-check: maybe resume, maybe retry

    def _settle(self, key: str, error: BaseException | None) -> None:
        """Under the lock: account for a write that ended. ``has(key)`` never flickers: the
        value is in the store or in ``spilled`` before it leaves ``spilling``."""
        nbytes = self.spilling.get(key)
        if nbytes is None:
            return
        direct = self.direct.pop(key, None)
        frames = self.freed.pop(key, None)
        if frames is not None:  # freed while being written: now nobody reads its buffers
            del self.spilling[key]
            dataplane.release(frames, self.registry)
            if error is None:
                self.file.delete(key)
            return
        if error is not None:
            if direct is not None:
                # acknowledged to its sender before the write: keep it in memory instead
                try:
                    self.store.put(key, dataplane.loads(direct), nbytes)
                except Exception:  # noqa: BLE001 - a sender's bad pickle: the value cannot be kept
                    log.exception("worker %s: cannot keep %r after its spill failed", self.name, key)
            del self.spilling[key]
            self._failed(key, error)
            return
        if self.error is not None:
            log.warning("worker %s: spilling works again", self.name)
            self.error = None
        self._backoff = self._retry_min
        if direct is not None:  # written straight from the network: nothing in memory to drop
            self.spilled[key] = nbytes
            del self.spilling[key]
            return
        if key not in self.store:  # freed meanwhile
            del self.spilling[key]
            self.file.delete(key)
            return
        self.spilled[key] = nbytes
        del self.spilling[key]
        self.store.pop(key)
        frames = self.shared.pop(key, None)
        if frames is not None:
            dataplane.release(frames, self.registry)
        count("spill.bytes_spilled", nbytes)

    def _failed(self, key: str, error: BaseException) -> None:
        # keep the value in memory; after a disk error retry with back-off (see _may_spill),
        # and pause while memory stays high (tasks that cannot start then fail with a clear
        # MemoryError once a retry has failed too)
        if getattr(error, "errno", None) == errno.ECANCELED:  # deleted, or closing: nothing to do
            log.debug("worker %s: spilling %r cancelled", self.name, key)
            return
        if not isinstance(error, OSError):
            log.warning("worker %s: spilling %r failed: %r; kept in memory", self.name, key, error)
            return
        if self.error is None:
            log.error("worker %s cannot spill %r: %s; keeping values in memory and retrying",
                      self.name, key, error)
            self._retry_at = now() + int(self._backoff * 1e9)
        self.error = error
        self.failures += 1

    def forget(self, key: str) -> bool:
        """The value of ``key`` is freed. True if its buffers must stay until a write ends."""
        with self.lock:
            if key in self.spilling:
                # the write ends in _settle, which then drops what it wrote
                self.freed[key] = self.shared.pop(key, None) or []
                return True
            if self.spilled.pop(key, None) is not None:
                self.file.delete(key)
            return False

    def has(self, key: str) -> bool:
        return key in self.spilled or (key in self.spilling and key not in self.store)

    def headroom(self, adding: int) -> bool:
        """Whether ``adding`` more bytes keep held values under the spill target."""
        return not over(self.store.nbytes + self.fetched.nbytes + adding, self.limit, self.target)

    def over_target(self, adding: int = 0) -> bool:
        """Whether held values (plus ``adding`` more bytes) exceed the spill target."""
        return over(self.store.nbytes + self.fetched.nbytes + adding, self.limit, self.target)

    def put_frames(self, key: str, frames: list, nbytes: int) -> bool:
        """Write an incoming value straight to disk (the worker is over its target).
        Returns False if it cannot (the caller then keeps it in memory)."""
        with self.lock:
            if self.error is not None or not self._open(key):
                return False
            self.spilling[key] = nbytes
            self.direct[key] = frames
        self.file.put(key, frames, None, self._written)
        return True

    def unspill(self, key: str) -> Any:
        """Read a spilled value back into memory (and forget its copy on disk)."""
        with self._settled:
            # a write in progress either lands on disk or, if it fails, in the store
            self._settled.wait_for(lambda: key not in self.spilling)
            value = self.store.get(key, _MISSING)
            if value is not _MISSING:
                return value
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
        try:
            return self.file.map_frames(key)
        except KeyError:  # a failed write has just put it back into the store
            value = self.store.get(key, _MISSING)
            if value is _MISSING:
                raise
            return dataplane.dumps(value)

    def discard(self, key: str) -> None:
        with self.lock:
            if self.spilled.pop(key, None) is not None:
                self.file.delete(key)

    def wait_until_running(self) -> None:
        """Block an executor thread while the worker is paused (returns at once otherwise).

        Raises MemoryError when spilling fails and memory stays above the pause threshold:
        once a retry made while this task waited has failed too (or the longest back-off has
        passed twice), the task cannot start, and waiting might never end.
        """
        failures = self.failures
        deadline = now() + int(2 * self._retry_max * 1e9)
        while not self.running.wait(0.1):
            self.check()
            if (self.error is not None and not self.running.is_set()
                    and (self.failures > failures or now() > deadline)):
                raise MemoryError(
                    f"worker {self.name} is above {self.pause_at:.0%} of its memory limit "
                    f"({self.limit} bytes) and cannot spill to disk: {self.error}")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def stats(self) -> dict:
        out = {"spilled_keys": len(self.spilled), "spilled_bytes": sum(self.spilled.values()),
               "paused": self.paused, "error": repr(self.error) if self.error else None,
               "spill_failures": self.failures}
        if self.file is not None:
            out["spill"] = self.file.stats
        return out
