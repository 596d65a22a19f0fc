"""FriskyExecutor: a ``concurrent.futures.Executor`` backed by a Frisky cluster."""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from frisky import config
from frisky.client.future import Future

_interpreter_exiting = False


def _python_exit() -> None:
    global _interpreter_exiting
    _interpreter_exiting = True


# runs after the executors' own exit hooks (they are registered later, and run first)
threading._register_atexit(_python_exit)


def _process_chunk(fn: Callable, chunk: list[tuple]) -> list:
    return [fn(*args) for args in chunk]


def _chunks(iterables: tuple, chunksize: int) -> Iterator[list[tuple]]:
    it = zip(*iterables)
    while True:
        chunk = list(itertools.islice(it, chunksize))
        if not chunk:
            return
        yield chunk


class _Resources:
    """What an executor owns, apart from the executor object itself, so that a finalizer
    can finish pending work and release everything after the executor is dropped."""

    def __init__(self, client, cluster) -> None:
        # submit's futures and map's jobs are held by the client until done, also when
        # the caller has dropped them (stdlib semantics)
        self.client = client
        self.cluster = cluster
        self.closing = threading.Lock()  # held for the whole close: later callers wait on it
        self.closed = False

    def not_done(self) -> list[Future]:
        return [f for f in list(self.client._held.values()) if not f.done()]

    def jobs(self) -> list:
        return list(self.client._jobs.values())

    def cancel_queued(self) -> None:
        self.client._cancel_queued(self.not_done())
        for job in self.jobs():
            job.cancel_queued()

    def finish(self) -> None:
        """Wait for submitted work, then close the client and the private cluster."""
        concurrent.futures.wait(self.not_done())
        for job in self.jobs():
            job.wait()
        with self.closing:
            if self.closed:
                return
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
            self.closed = True

    def finish_in_background(self) -> None:
        threading.Thread(target=self.finish, name="frisky-executor-shutdown", daemon=True).start()


class FriskyExecutor(concurrent.futures.Executor):
    """Run calls on a Frisky cluster, with the exact semantics of the stdlib's executors.

    Without ``address`` it starts a private :class:`~frisky.deploy.cluster.LocalCluster` of
    ``max_workers`` worker processes (extra keywords go to it); with one, it joins that
    scheduler. Each ``submit`` runs its call once, even with equal arguments.
    """

    def __init__(self, max_workers: int | None = None, address: Any = None, **cluster_kwargs) -> None:
        from frisky.client.client import Client
        from frisky.deploy.cluster import LocalCluster

        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        cluster = None
        if address is None:
            address = config.get("scheduler")  # FRISKY_SCHEDULER: an address or a connection file
        if address is None:
            cluster = address = LocalCluster(n_workers=max_workers, **cluster_kwargs)
        try:
            client = Client(address)
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise
        self._max_workers = max_workers
        self._res = _Resources(client, cluster)
        self._client, self._cluster = client, cluster
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        # like the stdlib: a dropped executor finishes its work, then lets go of everything;
        # and so does one still alive at interpreter exit
        self._finalizer = weakref.finalize(self, _Resources.finish_in_background, self._res)
        threading._register_atexit(_Resources.finish, self._res)

    @property
    def client(self):
        """The :class:`~frisky.client.client.Client` this executor submits through."""
        return self._res.client

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _interpreter_exiting or self._res.closed:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        with self._shutdown_lock:
            self._check_open()
            # track: the client holds the future until done, and reports when it starts
            return self._res.client._submit(fn, args, kwargs, pure=False, track=True)

    submit.__doc__ = concurrent.futures.Executor.submit.__doc__

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """Like :meth:`concurrent.futures.Executor.map`: calls are submitted at once, in
        batches; results come back in order. ``chunksize`` groups calls into one task."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else timeout + time.monotonic()
        client = self._res.client
        with self._shutdown_lock:
            self._check_open()
            if chunksize == 1:
                job = client._map_job(fn, iterables)
            else:
                job = client._map_job(_process_chunk, (itertools.repeat(fn), _chunks(iterables, chunksize)))
        results = _results(job, end_time, chunked=chunksize > 1)
        # dropped before it started, it never runs its ``finally``: the calls run on
        weakref.finalize(results, job.abandon)
        return results

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; optionally cancel what has not started; release the cluster."""
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                # what a worker has started runs on, as with the stdlib's executors
                self._res.cancel_queued()
        if wait:
            self._res.finish()
        else:
            self._res.finish_in_background()


def _results(job, end_time: float | None, chunked: bool) -> Iterator:
    # yield in order, holding no reference to what was yielded (like the stdlib); on early
    # exit cancel what no worker has been given yet
    i = 0
    try:
        while i < job.n:
            if chunked:
                chunk = job.take(i, end_time)
                i += 1
                chunk.reverse()
                while chunk:
                    yield chunk.pop()
            else:
                yield job.take(i, end_time)  # no local holds what is handed out
                i += 1
    finally:
        job.close(i)
