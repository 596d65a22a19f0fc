"""FriskyExecutor: a ``concurrent.futures.Executor`` backed by a Frisky cluster."""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from frisky.future import Future


def _process_chunk(fn: Callable, chunk: list[tuple]) -> list:
    return [fn(*args) for args in chunk]


def _chunks(iterables: tuple, chunksize: int) -> Iterator[list[tuple]]:
    it = zip(*iterables)
    while True:
        chunk = list(itertools.islice(it, chunksize))
        if not chunk:
            return
        yield chunk


class FriskyExecutor(concurrent.futures.Executor):
    """Run calls on a Frisky cluster, with the exact semantics of the stdlib's executors.

    Without ``address`` it starts a private :class:`~frisky.cluster.LocalCluster` of
    ``max_workers`` worker processes (extra keywords go to it); with one, it joins that
    scheduler. Each ``submit`` runs its call once, even with equal arguments.
    """

    def __init__(self, max_workers: int | None = None, address: Any = None, **cluster_kwargs) -> None:
        from frisky.client import Client
        from frisky.cluster import LocalCluster

        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._cluster = None
        if address is None:
            self._cluster = LocalCluster(n_workers=max_workers, **cluster_kwargs)
            address = self._cluster
        try:
            self._client = Client(address)
        except BaseException:
            if self._cluster is not None:
                self._cluster.close()
            raise
        self._max_workers = max_workers
        self._pending: set[Future] = set()
        self._pending_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._closed = False
        # like the stdlib: finish submitted work at interpreter exit
        threading._register_atexit(_atexit, weakref.ref(self))

    @property
    def client(self):
        """The :class:`~frisky.client.Client` this executor submits through."""
        return self._client

    def _track(self, f: Future) -> Future:
        # a dropped executor future must still run (stdlib semantics), so hold it until done
        with self._pending_lock:
            self._pending.add(f)
        f.add_done_callback(self._untrack)
        return f

    def _untrack(self, f: Future) -> None:
        with self._pending_lock:
            self._pending.discard(f)

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            return self._track(self._client._submit(fn, args, kwargs, pure=False))

    submit.__doc__ = concurrent.futures.Executor.submit.__doc__

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """Like :meth:`concurrent.futures.Executor.map`: calls are submitted at once, in
        batches; results come back in order. ``chunksize`` groups calls into one task."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else timeout + time.monotonic()
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if chunksize == 1:
                fs = [self._track(f) for f in self._client._map_iter(fn, iterables, {}, pure=False)]
            else:
                calls = (itertools.repeat(fn), _chunks(iterables, chunksize))
                fs = [self._track(f) for f in self._client._map_iter(_process_chunk, calls, {}, pure=False)]
        return _results(fs, end_time, chunked=chunksize > 1)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; optionally cancel what has not started; release the cluster."""
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                with self._pending_lock:
                    pending = list(self._pending)
                for f in pending:
                    f.cancel()
        if wait:
            self._finish()
        else:
            threading.Thread(target=self._finish, name="frisky-executor-shutdown", daemon=True).start()

    def _finish(self) -> None:
        with self._pending_lock:
            pending = list(self._pending)
        concurrent.futures.wait(pending)
        with self._shutdown_lock:
            if self._closed:
                return
            self._closed = True
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _results(fs: list[Future], end_time: float | None, chunked: bool) -> Iterator:
    # yield in order, holding no reference to what was yielded (like the stdlib); on early
    # exit cancel what is left
    fs.reverse()
    try:
        while fs:
            if chunked:
                chunk = _pop_result(fs, end_time)
                chunk.reverse()
                while chunk:
                    yield chunk.pop()
            else:
                yield _pop_result(fs, end_time)
    finally:
        for f in fs:
            f.cancel()


def _pop_result(fs: list[Future], end_time: float | None):
    f = fs.pop()
    try:
        return f.result(None if end_time is None else end_time - time.monotonic())
    except BaseException:
        f.cancel()
        raise


def _atexit(ref: weakref.ref) -> None:
    ex = ref()
    if ex is not None:
        ex.shutdown(wait=True)
