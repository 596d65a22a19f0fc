"""Client: submit work to a Frisky scheduler and get futures back.

User threads serialize and queue messages; one background I/O thread owns the socket
to the scheduler, sends what is queued (so submissions batch themselves) and completes
futures as results arrive. Queries and data fetches use per-thread sockets, so a
done-callback may call ``result()`` without waiting on the I/O thread.

Internal interface. :mod:`.future`, :mod:`.executor`, :mod:`.map_job` and :mod:`.dask`
use these underscored members of :class:`Client`, and nothing else that is private;
change them together:

- ``_submit(fn, args, kwargs, ...)``, ``_map_job(fn, iterables)``: submit one call / an
  executor map (a :class:`~frisky.client.map_job.MapJob`, no future per call).
- ``_future(key, wkey)``: the live future of a key, made if needed; ``_futures``: wire
  key -> weak reference to it; ``_held``: executor futures kept alive until done;
  ``_jobs``: live map jobs.
- ``_fetch_remote(wkey, key, remote, timeout)``: a result held by a worker
  (:mod:`.fetch`, with the per-thread sockets and ``_query``).
- ``_release_later(wkey)``, ``_release_job_keys(job, upto)``, ``_job_maybe_done(job)``:
  tell the scheduler a key is no longer wanted (batched by the I/O thread).
- ``_cancel_keys(wkeys)``, ``_cancel_queued(futures)``, ``_cancel_queued_keys(wkeys)``:
  cancel, or take back work no worker has started.
- ``_keep_until_done(future)``: a dropped future still runs its callbacks.
- ``_send_frames(frames)``: queue a raw message, in order with submissions;
  ``_check_open()``, ``_closed``, ``_dask_config``: lifetime and dask's default scheduler.
"""

from __future__ import annotations

import collections
import gc
import hashlib
import itertools
import logging
import os
import pickle
import secrets
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from typing import Any

import zmq

from frisky import config, logs, protocol
from frisky.client import map_job
from frisky.client.fetch import ClientFetch
from frisky.client.future import _DONE_STATES, Future, wait
from frisky.client.io import ClientIO
from frisky.client.map_job import MapJob
from frisky.data import compression, dataplane
from frisky.data.deps import extract, has_futures
from frisky.data.serialize import _ATOMIC, PickleCodec, is_atomic
from frisky.deploy.launch import connection
from frisky.errors import ClientClosed, SchedulerGone
from frisky.protocol import pack, wire_key
from frisky.telemetry import now, recorder
from frisky.zmq import curve, sockets

log = logging.getLogger("frisky.client")


_FIRST_BATCH = 1000  # map sends its first tasks early so workers start at once
_JOB_PENDING = map_job._PENDING
ACTIVITY_INTERVAL = 0.25  # seconds between activity messages of one kind (the dashboard refreshes each second)
ACTIVITY_MIN_TASKS = 10_000  # a map this big shows its upload on the dashboard


def _funcname(fn: Callable) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if name == "<lambda>":
        return "lambda"
    return name.replace("-", "_")


class Client(ClientIO, ClientFetch):
    """Connect to a scheduler (an address, or a :class:`~frisky.deploy.cluster.LocalCluster`).

    ``Client()`` with no address starts a private LocalCluster and closes it on close.
    """

    asynchronous = False  # dask asks: this client blocks, it has no event loop

    def __init__(self, address: Any = None, *, timeout: float | None = None, name: str | None = None,
                 set_as_default: bool = True, keys: Any = None, **cluster_kwargs) -> None:
        from frisky.deploy.cluster import LocalCluster

        self._owned_cluster = None
        self.cluster = None
        if address is None:
            address = config.get("scheduler")  # FRISKY_SCHEDULER: an address or a connection file
        if connection.is_file_address(address):
            doc = connection.load(os.fspath(address))
            address, keys = doc["scheduler"], keys if keys is not None else doc.get("keys")
        # CURVE keys (a directory, a file or the connection file's object): see frisky.zmq.curve
        self.keys = curve.load(keys) if keys is not None else None
        if address is None:
            address = self._owned_cluster = LocalCluster(**cluster_kwargs)
        if isinstance(address, LocalCluster):
            self.cluster = address
            self.codec = address.codec()
            self.ctx = address.ctx
            address = address.scheduler_address
        else:
            sockets.check_address(address)
            self.codec = PickleCodec()
            self.ctx = sockets.context_for(address)
        self.scheduler_address = address
        self.timeout = config.get("connect_timeout", timeout)
        self.name = name or f"client-{os.getpid()}"
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._futures: dict[str, weakref.ref] = {}
        self._held: dict[str, Future] = {}  # executor futures, kept alive until done
        self._jobs: dict[str, MapJob] = {}  # executor maps, by key prefix, until every call is done
        self._outbox: collections.deque = collections.deque()
        self._fn_cache: dict[int, tuple] = {}
        self._hashers: dict[bytes, Any] = {}  # fid -> blake2b that has absorbed it (see _fid_hasher)
        self._local = threading.local()
        self._thread_sockets: list[zmq.Socket] = []
        self._dropped = logs.Dropped(log, "reply")  # replies refused (sealed parts that fail)
        self._requests: dict[int, list] = {}  # req id -> [event, reply], answered via the I/O thread
        self._news: dict[str, list] = {}  # key being re-fetched -> [event, outcome] (see _await_news)
        self._closed = False
        self._lost = False
        self._io_dozing = True  # the I/O thread sleeps until woken (see _release_later)
        self._max_batch = config.get("max_batch")  # tasks in one submit message
        self._shm_threshold = config.get("shm_threshold")  # scattered buffers this big go to shared memory
        self._act_kind, self._act_at = "idle", 0.0  # the last activity told to the scheduler (see _activity)
        self._prefer = compression.preference()  # codec for buffers scattered over TCP
        self.status = "connecting"
        self.waker = sockets.Waker()
        ident = f"c-{os.getpid()}-{self._prefix}".encode()
        self.sock = sockets.dealer(self.ctx, address, ident, keys=self.keys)
        try:
            self._connect()
        except BaseException:
            self.sock.close(0)
            self.waker.close()
            if self._owned_cluster is not None:
                self._owned_cluster.close()
            raise
        self._thread = threading.Thread(target=self._io_loop, name="frisky-client-io", daemon=True)
        self._thread.start()
        self.status = "running"
        self._dask_config = None
        if set_as_default:  # dask's default scheduler while open, as with dask.distributed
            from frisky.client import dask as dask_glue

            dask_glue.set_as_default(self)

    def _connect(self) -> None:
        self.sock.send_multipart([protocol.header(protocol.HELLO_CLIENT, self.name)])
        if not self.sock.poll(int(self.timeout * 1000)):
            hint = ""
            if self.scheduler_address.startswith("tcp://"):  # a keyed scheduler ignores a failed handshake
                hint = (" (are these keys this cluster's?)" if self.keys is not None else
                        " (a cluster with keys answers only clients holding them: Client('frisky.json'))")
            raise TimeoutError(f"no Frisky scheduler answered at {self.scheduler_address} within {self.timeout}s{hint}")
        try:
            msg = protocol.parse_to_client(self.sock.recv_multipart())
        except protocol.ProtocolError as e:
            raise ConnectionError(f"a malformed answer from {self.scheduler_address}: {e.why}") from None
        if type(msg) is not protocol.Welcome:
            raise ConnectionError(f"unexpected answer from {self.scheduler_address}: {type(msg).__name__}")
        self.id, self.cluster_id, self._welcome_info = msg.id, msg.cluster_id, msg.info
        self._token = msg.token  # names us in queries from our other sockets (``where``)

    @property
    def dashboard_link(self) -> str | None:
        """The cluster's dashboard URL (its JSON API under ``/api/v1``), or None if it has none."""
        return self._welcome_info.get("dashboard")

    def _activity(self, kind: str, done: int = 0, total: int = 0, detail: str = "", force: bool = False) -> None:
        """Tell the scheduler what this client is doing (building or uploading a graph of
        ``total`` tasks, waiting on ``total`` futures, idle), for the dashboard: at most every
        ``ACTIVITY_INTERVAL`` seconds unless the kind changes or ``force``."""
        t = time.monotonic()
        if not force and kind == self._act_kind and t - self._act_at < ACTIVITY_INTERVAL:
            return
        if self._closed or self._lost:
            return
        self._act_kind, self._act_at = kind, t
        self._outbox.append(protocol.Activity(kind, done, total, detail[:protocol.MAX_DETAIL]).encode())
        self.waker.wake()

    # ------------------------------------------------------------- submitting
    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this Client is closed")
        if self._lost:
            raise SchedulerGone(f"the scheduler at {self.scheduler_address} is gone")

    def _function(self, fn: Callable) -> tuple[bytes, bytes]:
        entry = self._fn_cache.get(id(fn))
        if entry is not None and entry[0] is fn:
            return entry[1], entry[2]
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        blob = self.codec.dumps_function(fn)
        if self.codec.local:
            # a handle per submission, released by the scheduler with its last task: never
            # cached, so nothing here keeps a function (or a bound method's object) alive
            return blob, blob
        fid = protocol.function_id(blob)
        if type(fn) is not types.MethodType:  # a bound method would pin its instance
            if len(self._fn_cache) > 256:
                self._fn_cache.clear()
            self._fn_cache[id(fn)] = (fn, fid, blob)
        return fid, blob

    def _on_future_arg(self, f: Future) -> str:
        if f._client is not self:
            raise ValueError(f"future {f.key!r} belongs to another client")
        return f._wkey

    def _prepare(self, fid: bytes, fn: Callable, name: str, args: tuple, kwargs: dict, key, pure: bool):
        """Serialize one call: returns (key, wire key, payload or None if already known, deps)."""
        deps = None
        if kwargs or has_futures(args, Future):
            args, kwargs, deps = extract(args, kwargs, Future, self._on_future_arg)
            if kwargs and has_futures(kwargs.values(), Future):
                pass
        if self.codec.local:
            if key is None:
                key = f"{name}-{self._token_local(fn, args, kwargs) if pure else self._unique()}"
            payload = None
        else:
            payload = self.codec.dumps_args(args, kwargs)
            if key is None:
                if pure:
                    h = self._fid_hasher(fid)
                    h.update(payload)
                    key = f"{name}-{h.hexdigest()}"
                else:
                    key = f"{name}-{self._unique()}"
        return key, payload, deps, args, kwargs

    def _fid_hasher(self, fid: bytes):
        """A fresh blake2b hasher that has absorbed ``fid``: pure keys hash fid + payload,
        and copying a prepared hasher costs half of making one."""
        base = self._hashers.get(fid)
        if base is None:
            if len(self._hashers) > 256:
                self._hashers.clear()
            base = self._hashers[fid] = hashlib.blake2b(fid, digest_size=16)
        return base.copy()

    def _token_local(self, fn: Callable, args: tuple, kwargs: dict) -> str:
        import pickle

        try:
            data = pickle.dumps((args, kwargs), protocol=5)
        except Exception:
            return self._unique()
        # in-process, a function is itself while it lives: its identity names it
        ident = f"{id(fn)}:{getattr(fn, '__qualname__', '')}".encode()
        return hashlib.blake2b(ident + data, digest_size=16).hexdigest()

    def _unique(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    def submit(self, fn: Callable, *args, key: Any = None, pure: bool = True, retries: int = 0,
               workers: Any = None, priority: int = 0, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` on the cluster. Futures among the arguments are dependencies."""
        return self._submit(fn, args, kwargs, key=key, pure=pure, retries=retries, workers=workers,
                            priority=priority)

    def _submit(self, fn, args, kwargs, *, key=None, pure=True, retries=0, workers=None, priority=0,
                track: bool = False) -> Future:
        self._check_open()
        t0 = now()
        fid, fblob = self._function(fn)
        name = _funcname(fn)
        key, payload, deps, args, kwargs = self._prepare(fid, fn, name, args, kwargs, key, pure)
        wkey = wire_key(key)
        fut, new = self._future(key, wkey)
        if not new:
            return fut
        if payload is None:
            payload = self.codec.dumps_args(args, kwargs)
        if track:  # an executor's: runs even if dropped, as with the stdlib's executors
            self._held[wkey] = fut
        # single submissions queue as tuples; the I/O thread packs runs of them into one message
        self._outbox.append((wkey, fid, fblob, payload, deps, retries, priority, _workers(workers), track))
        self.waker.wake()
        recorder.span("client.submit", t0, name)
        return fut

    def map(self, fn: Callable, *iterables: Iterable, key: Any = None, pure: bool = True, retries: int = 0,
            workers: Any = None, priority: int = 0, batch_size: int | None = None, **kwargs) -> list[Future]:
        """Submit ``fn`` over the items of ``iterables``; returns a list of futures in order.

        The function is sent once; tasks go out in batches as they are prepared, so the
        cluster is busy before the last one is submitted. ``key`` may be a list of keys.
        """
        return list(self._map_iter(fn, iterables, kwargs, key=key, pure=pure, retries=retries,
                                   workers=workers, priority=priority, batch_size=batch_size))

    def _map_iter(self, fn, iterables, kwargs, *, key=None, pure=True, retries=0, workers=None, priority=0,
                  batch_size=None):
        self._check_open()
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        fid, fblob = self._function(fn)
        name = _funcname(fn)
        restrict = _workers(workers)
        keys_given = iter(key) if isinstance(key, (list, tuple)) else None
        items = iterables[0] if len(iterables) == 1 else zip(*iterables)
        single = len(iterables) == 1
        codec = self.codec
        fast = not kwargs and not codec.local
        dumps = codec.dumps_args
        batches = _Batches(self, fid, fblob, retries, priority, restrict, batch_size, name=name,
                           total=_length(iterables))
        prefix = f"{name}-"
        fid_hasher = self._fid_hasher
        atomic = _ATOMIC
        new_future = self._future
        plain_dumps = pickle.dumps if type(codec) is PickleCodec else None  # what dumps_args does for atoms
        unique_prefix, counter = prefix + self._prefix, self._counter
        paused = _pause_gc()  # hundreds of thousands of live futures: GC passes only cost
        try:
            for item in items:
                args = (item,) if single else item
                k = next(keys_given) if keys_given is not None else None
                if fast and k is None and (type(item) in atomic if single else is_atomic(args)):
                    payload = plain_dumps(args, pickle.HIGHEST_PROTOCOL) if plain_dumps else dumps(args, None)
                    if pure:
                        h = fid_hasher(fid)
                        h.update(payload)
                        k = wkey = prefix + h.hexdigest()
                    else:
                        k = wkey = f"{unique_prefix}{next(counter):x}"
                    deps = None
                else:
                    k, payload, deps, a2, kw2 = self._prepare(fid, fn, name, args, kwargs, k, pure)
                    wkey = wire_key(k)
                fut, new = new_future(k, wkey)
                if new:
                    batches.add(wkey, dumps(a2, kw2) if payload is None else payload, deps)
                yield fut
            batches.flush()
        finally:
            _resume_gc(paused)
            batches.finish()

    def _map_job(self, fn: Callable, iterables: tuple) -> MapJob:
        """Submit ``fn`` over ``iterables`` (all of it, now) as one :class:`MapJob`: results
        by position, no future per call. ``FriskyExecutor.map`` reads it in order."""
        self._check_open()
        fid, fblob = self._function(fn)
        name = _funcname(fn)
        job = MapJob(self, f"{name}-{self._prefix}j{next(self._counter):x}")
        codec = self.codec
        fast = not codec.local
        plain_dumps = pickle.dumps if type(codec) is PickleCodec else None  # what dumps_args does for atoms
        dumps = codec.dumps_args
        atomic = _ATOMIC
        single = len(iterables) == 1
        items = iterables[0] if single else zip(*iterables)
        prefix = job.prefix + "."
        # a call's result slot exists before its task is sent
        batches = _Batches(self, fid, fblob, on_send=lambda n: job.slots.extend([_JOB_PENDING] * n), name=name,
                           total=_length(iterables))
        self._jobs[job.prefix] = job
        i = -1
        try:
            for i, item in enumerate(items):
                args = (item,) if single else item
                wkey = f"{prefix}{i:x}"
                if fast and (type(item) in atomic if single else is_atomic(args)):
                    payload = plain_dumps(args, pickle.HIGHEST_PROTOCOL) if plain_dumps else dumps(args, None)
                    deps = None
                else:
                    _, payload, deps, a2, kw2 = self._prepare(fid, fn, name, args, {}, wkey, False)
                    if payload is None:
                        payload = dumps(a2, kw2)
                batches.add(wkey, payload, deps)
            batches.flush()
        except BaseException:
            job.n = batches.sent  # what was sent runs; the caller never sees it
            job.close(0)
            raise
        finally:
            batches.finish()
        job.n = i + 1
        return job

    def _release_job_keys(self, job: MapJob, upto: int) -> None:
        """Release the keys of ``job``'s calls below ``upto`` (their results were read)."""
        lo, job.released = job.released, max(job.released, upto)
        if upto > lo and not self._closed and not self._lost:
            self._outbox.append([protocol.header(protocol.RELEASE, job.keys_of(range(lo, upto)))])
            if self._io_dozing:
                self.waker.wake()

    def _job_maybe_done(self, job: MapJob) -> None:
        """Forget a job its consumer has left once every call has an outcome."""
        if job.closed and job.complete and self._jobs.pop(job.prefix, None) is not None:
            self._release_job_keys(job, job.n)

    def _future(self, key: Any, wkey: str) -> tuple[Future, bool]:
        """The live future for ``wkey``, or a new one; and whether it is new."""
        futures = self._futures
        if wkey not in futures:
            # fast path without the lock: the I/O thread only deletes keys that are present
            f = Future(key, wkey, self)
            ref = weakref.ref(f)
            if futures.setdefault(wkey, ref) is ref:
                return f, True
        with self._lock:
            ref = futures.get(wkey)
            if ref is not None:
                f = ref()
                if f is not None and "_dead" not in f.__dict__:
                    return f, False
            f = Future(key, wkey, self)
            futures[wkey] = weakref.ref(f)
            return f, True

    def _send_submit(self, keys, fidx, fids, fblobs, payloads, deps, retries, priority, workers) -> None:
        frames = [protocol.header(protocol.SUBMIT, keys, fidx, fids, deps, retries, priority, workers, False, None),
                  pack(payloads), *fblobs]
        self._outbox.append(frames)
        self.waker.wake()

    def _send_frames(self, frames: list) -> None:
        """Queue one raw message for the scheduler, in order with submissions (internal)."""
        self._outbox.append(frames)
        self.waker.wake()

    # ------------------------------------------------------------------ dask
    def get(self, dsk: Any, keys: Any, **kwargs) -> Any:
        """Dask's scheduler interface: compute ``keys`` of graph ``dsk`` on the cluster.

        ``dask.compute(x, scheduler=client.get)`` and ``dask.config.set(scheduler=client)``
        use it; ``workers=``, ``retries=`` and ``priority=`` apply to every task.
        """
        from frisky.client import dask as dask_glue

        return dask_glue.get(self, dsk, keys, **kwargs)

    def compute(self, collections: Any, sync: bool = False, **kwargs) -> Any:
        """Start computing dask collections; returns a future each (values with ``sync=True``)."""
        from frisky.client import dask as dask_glue

        return dask_glue.compute(self, collections, sync=sync, **kwargs)

    def persist(self, collections: Any, **kwargs) -> Any:
        """Compute dask collections in the background; returns them backed by futures."""
        from frisky.client import dask as dask_glue

        return dask_glue.persist(self, collections, **kwargs)

    # ------------------------------------------------------------- results
    def gather(self, futures: Any, errors: str = "raise") -> Any:
        """Results of ``futures`` (a future, or lists/tuples/dicts/sets of them), same shape.

        ``errors="skip"`` leaves out failed futures from lists instead of raising.
        """
        if self._closed:
            raise ClientClosed("this Client is closed: gather() can no longer fetch results")
        flat: list[Future] = []
        _collect(futures, flat)
        paused = _pause_gc()
        pending = sum(1 for f in flat if not f.done())
        if pending:
            self._activity("waiting", len(flat) - pending, len(flat), f"gather of {len(flat)} futures", force=True)
        try:
            self._prefetch(flat)
            return _rebuild(futures, Future.result, skip=errors == "skip")
        finally:
            _resume_gc(paused)
            if pending:
                self._activity("idle", force=True)

    def scheduler_info(self) -> dict:
        """The scheduler's view: ``info["workers"]`` maps worker addresses to name, pid, nthreads…"""
        return self._query(protocol.INFO)

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> None:
        """Block until at least ``n_workers`` workers are connected."""
        info = self._query(protocol.WAIT_WORKERS, n_workers, timeout if timeout is not None else 3600)
        if info is not True:
            raise TimeoutError(f"fewer than {n_workers} workers joined within {timeout}s")

    # ---------------------------------------------------------------- data
    def scatter(self, data: Any, workers: Any = None, broadcast: bool = False, hash: bool = True) -> Any:
        """Send data to the cluster; returns futures of the same shape (a future, list or dict)."""
        self._check_open()
        if isinstance(data, dict):
            items = list(data.items())
        elif isinstance(data, (list, tuple, set, frozenset)):
            items = [(None, v) for v in data]
        else:
            items = [(None, data)]
        keys, descs_all, frames, futs = [], [], [], []
        same_host = not self.scheduler_address.startswith("tcp://")
        for k, value in items:
            blob = self.codec.dumps_value(value)
            if k is None:
                if hash and not self.codec.local:
                    parts = [blob] if type(blob) is bytes else blob
                    h = hashlib.blake2b(digest_size=16)
                    for p in parts:
                        h.update(p)
                    k = f"{type(value).__name__}-{h.hexdigest()}"
                else:
                    k = f"{type(value).__name__}-{self._unique()}"
            wkey = wire_key(k)
            fut, new = self._future(k, wkey)
            futs.append(fut)
            if not new:
                continue
            keys.append(wkey)
            if type(blob) is bytes:
                descs_all.append(None)  # small: kept by the scheduler, inline
                frames.append(blob)
                continue
            value_frames = dataplane.dumps(value)
            if same_host:  # written once into shared memory; the worker maps it
                value_frames = dataplane.share(value_frames, self.cluster_id, _HANDOFF, self._shm_threshold)
            descs, out = dataplane.encode(value_frames, same_host, None if same_host else self._prefer)
            descs_all.append(descs)
            frames.extend(out)
        if keys:
            self._outbox.append([protocol.header(protocol.SCATTER, keys, descs_all, _workers(workers)), *frames])
            self.waker.wake()
        wait(futs, timeout=self.timeout * 10)
        if isinstance(data, dict):
            return {k: f for (k, _), f in zip(items, futs)}
        if isinstance(data, (list, tuple, set, frozenset)):
            return type(data)(futs) if not isinstance(data, (set, frozenset)) else futs
        return futs[0]

    def cancel(self, futures: Any) -> None:
        """Cancel futures that have not finished."""
        flat: list[Future] = []
        _collect(futures, flat)
        for f in flat:
            f.cancel()

    def _cancel_queued(self, futures: list[Future]) -> None:
        """Cancel the futures whose tasks no worker has been given yet (the scheduler knows);
        the others run to completion. Sent in order after the submissions."""
        by_key = {f._wkey: f for f in futures}
        for wkey in self._cancel_queued_keys(list(by_key)):
            super(Future, by_key[wkey]).cancel()  # already released on the scheduler: no message
            self._held.pop(wkey, None)

    def _cancel_queued_keys(self, wkeys: list[str]) -> list[str]:
        """Cancel the tasks of ``wkeys`` no worker has been given yet; returns their keys."""
        if self._closed or self._lost or not wkeys:
            return []
        req = next(self._counter)
        slot: list = [threading.Event()]
        self._requests[req] = slot
        self._outbox.append([protocol.header(protocol.CANCEL_QUEUED, req, wkeys)])
        self.waker.wake()
        if not slot[0].wait(self.timeout):
            self._requests.pop(req, None)
            return []
        if isinstance(slot[1], BaseException):  # the reply did not parse
            raise slot[1]
        return slot[1]

    def _cancel_keys(self, wkeys: list[str]) -> None:
        for k in wkeys:
            self._held.pop(k, None)
        if self._closed:
            return
        self._outbox.append([protocol.header(protocol.CANCEL, wkeys)])
        self.waker.wake()

    def _keep_until_done(self, f: Future) -> None:
        """Hold ``f`` until it completes (the I/O thread lets go after completing it)."""
        self._held[f._wkey] = f
        if f._state in _DONE_STATES:  # completed meanwhile: the I/O thread may have let go already
            self._held.pop(f._wkey, None)

    def _release_later(self, wkey: str) -> None:
        # called from Future.__del__: only append and poke the I/O thread. Releases share
        # the outbox with submissions so one never overtakes a submission queued before it.
        # No wake-up while the I/O thread is active: it flushes within _LAZY_FLUSH_MS anyway,
        # and a release woken on its own would cost the next submission a round of wake-ups.
        self._outbox.append(wkey)
        if self._io_dozing and not self._closed:
            self.waker.wake()

    # ---------------------------------------------------------------- closing
    def close(self, timeout: float = 5.0) -> None:
        """Disconnect; cancels unfinished futures. Closes a cluster this client started."""
        if self._closed:
            return
        self._closed = True
        self.status = "closed"
        if "frisky.client.dask" in sys.modules:
            sys.modules["frisky.client.dask"].unset_default(self)
        self.waker.wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        try:
            self.sock.send_multipart([protocol.header(protocol.BYE)], zmq.NOBLOCK)
        except zmq.ZMQError:  # cannot queue it: the scheduler notices the missed heartbeats instead
            log.debug("client bye not sent", exc_info=True)
        with self._lock:
            futures = [r() for r in self._futures.values()]
            self._futures.clear()
            for s in self._thread_sockets:
                s.close(0)
            self._thread_sockets.clear()
        for f in futures:
            if f is not None and not f.done():
                f._client = None
                f.cancel()
        self._held.clear()
        self._tell_news_all(ClientClosed("this Client is closed"))
        for job in list(self._jobs.values()):
            job.fail(CancelledError())
        self._jobs.clear()
        sockets.close_flushing(self.sock)  # the releases and the bye just sent must arrive
        self.waker.close()
        if self._owned_cluster is not None:
            self._owned_cluster.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close(timeout=1.0)
            except Exception:  # noqa: BLE001 - interpreter may be shutting down
                pass

    def __repr__(self) -> str:
        return f"<frisky.Client {self.scheduler_address} {self.status}>"


class _Batches:
    """The calls of one map, sent as ``submit`` messages while the rest are prepared: a
    small first batch so workers start at once, then full ones."""

    def __init__(self, client: Client, fid: bytes, fblob: bytes, retries=0, priority=0, workers=None,
                 size: int | None = None, on_send: Callable[[int], None] | None = None, name: str = "",
                 total: int | None = None) -> None:
        self.client, self.fid, self.fblob = client, fid, fblob
        self.name = name
        self.total = total  # calls in the map, if its iterables have a length
        self.told = False  # the scheduler was told we are uploading (big maps only)
        self.options = (retries, priority, workers)
        self.size = size
        self.limit = size or _FIRST_BATCH
        self.on_send = on_send  # told how many calls go, just before they do
        self.sent = 0
        self.wkeys: list[str] = []
        self.payloads: list = []
        self.deps: list = []
        self.any_deps = False

    def add(self, wkey: str, payload: bytes, deps: list[str] | None) -> None:
        self.wkeys.append(wkey)
        self.payloads.append(payload)
        self.deps.append(deps)
        if deps:
            self.any_deps = True
        if len(self.wkeys) >= self.limit:
            self.flush()
            self.limit = self.size or self.client._max_batch

    def flush(self) -> None:
        if not self.wkeys:
            return
        t0 = now()
        if self.on_send is not None:
            self.on_send(len(self.wkeys))
        self.client._send_submit(self.wkeys, 0, [self.fid], [self.fblob], self.payloads,
                                 self.deps if self.any_deps else None, *self.options)
        self.sent += len(self.wkeys)
        recorder.span("client.submit", t0, self.name, None, len(self.wkeys))
        self.wkeys, self.payloads, self.deps, self.any_deps = [], [], [], False
        if self.sent >= ACTIVITY_MIN_TASKS:  # a big map: the dashboard shows its upload
            total = max(self.total or 0, self.sent)
            self.client._activity("uploading", self.sent, total, f"map of {self.name}", force=not self.told)
            self.told = True

    def finish(self) -> None:
        """The map is submitted (or given up): no longer uploading."""
        if self.told:
            total = max(self.total or 0, self.sent)
            self.client._activity("uploading", self.sent, total, f"map of {self.name}", force=True)
            self.client._activity("idle", force=True)
            self.told = False


class _Handoff:
    """Segments the client creates for scatter belong to the receiving worker at once."""

    def add(self, seg) -> None:
        seg.close()


_HANDOFF = _Handoff()



def _pause_gc() -> bool:
    """Pause the cyclic GC while creating or reading very many futures; True if it was on.

    Generation scans over hundreds of thousands of live futures find nothing to free but
    cost a quarter of map's time; reference counting still frees everything as usual.
    """
    was = gc.isenabled()
    if was:
        gc.disable()
    return was


def _resume_gc(was: bool) -> None:
    if was:
        gc.enable()



def _length(iterables: tuple) -> int | None:
    """Calls a map over ``iterables`` makes, if they have lengths (the shortest decides)."""
    try:
        return min(len(it) for it in iterables)
    except TypeError:
        return None


def _workers(workers: Any) -> list[str] | None:
    if workers is None:
        return None
    if isinstance(workers, str):
        return [workers]
    return list(workers)


def _collect(x: Any, out: list) -> None:
    if isinstance(x, Future):
        out.append(x)
    elif isinstance(x, (list, tuple, set, frozenset)):
        for v in x:
            _collect(v, out)
    elif isinstance(x, dict):
        for v in x.values():
            _collect(v, out)


def _rebuild(x: Any, get: Callable, skip: bool) -> Any:
    if isinstance(x, Future):
        return get(x)
    if isinstance(x, (list, tuple, set, frozenset)):
        out = []
        for v in x:
            if skip and isinstance(v, Future) and v.done() and (v.cancelled() or v.exception() is not None):
                continue
            out.append(_rebuild(v, get, skip))
        return type(x)(out)
    if isinstance(x, dict):
        return {k: _rebuild(v, get, skip) for k, v in x.items()}
    return x
