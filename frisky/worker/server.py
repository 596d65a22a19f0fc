"""A worker: a DEALER to the scheduler, a ROUTER for peers (:mod:`.peers`), and executor
threads (:mod:`.executor`).

The loop thread owns every socket; executor threads hand results back to it.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from frisky import config, logs, procs, protocol, shm
from frisky.data import bufpool, compression, dataplane
from frisky.data.serialize import PickleCodec
from frisky.protocol import pack
from frisky.shm import arena
from frisky.telemetry import now, recorder
from frisky.telemetry.recorder import enable as enable_telemetry
from frisky.telemetry.ship import Shipper
from frisky.worker.executor import Executor
from frisky.worker.memory import MemoryManager
from frisky.worker.peers import Peers
from frisky.worker.state import (
    Batch,
    Execute,
    Fetch,
    Keep,
    Release,
    Skip,
    Task,
    Unskip,
    WorkerState,
)
from frisky.worker.store import Store, sizeof
from frisky.zmq import curve, sockets, zap

log = logs.logger("worker")


class Stopped(Exception):
    """stop() was called while the worker waited for the scheduler's welcome."""

_MISSING = object()


class Worker:
    """One worker. ``run()`` blocks; ``start()`` runs it in a thread (in-process clusters)."""

    def __init__(
        self,
        scheduler_address: str,
        *,
        name: str | None = None,
        nthreads: int = 1,
        memory_limit: int | None = None,
        shm_limit: int | None = None,
        listen_address: str | None = None,
        ctx: zmq.Context | None = None,
        codec=None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
        connect_timeout: float | None = None,
        keys: curve.Keys | None = None,
    ) -> None:
        self.scheduler_address = scheduler_address
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        # the host's arena budget, shared with the cluster's other workers there, and the
        # most this worker's region may hold of it
        self.shm_host = config.shm_limit() if shm_limit is None else shm_limit
        self.shm_limit = min(self.shm_host, memory_limit or self.shm_host)
        self.ctx = ctx or zmq.Context.instance()
        self.codec = codec or PickleCodec()
        self.inline_threshold = config.get("inline_threshold")
        self.shm_threshold = config.get("shm_threshold")
        self.monitor_interval = config.get("memory_monitor_interval")
        self.interval = config.get("heartbeat_interval", heartbeat_interval)
        self.timeout = config.get("heartbeat_timeout", heartbeat_timeout)
        self.connect_timeout = config.get("connect_timeout", connect_timeout)
        if listen_address is None:
            host = config.get("host")
            listen_address = f"tcp://{host}:0"
        self.keys = keys  # CURVE to the scheduler and between peers (see frisky.zmq.curve)
        if keys is not None:
            zap.set_policy(curve.policy(keys))
        self.dropped = logs.Dropped(log, "message")  # messages that did not parse, scheduler's or peers'
        self.peers = Peers(self, listen_address)
        self.address = self.peers.address
        if self.address.startswith("inproc://"):
            sockets.register_inproc(self.address, self.ctx)
        ident = f"w-{self.name}-{os.getpid()}-{secrets.token_hex(3)}".encode()
        self.sock = sockets.dealer(self.ctx, scheduler_address, ident, keys=keys)
        # a scheduler process that exits closes its end of the connection: the socket's monitor
        # says so at once, where heartbeats would take heartbeat_timeout (inproc has no events)
        self._monitor: zmq.Socket | None = None
        if not scheduler_address.startswith("inproc://"):
            self._monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.lost = False  # run() returned because the scheduler went away (exited, or silent)
        self.waker = sockets.Waker()
        self.state = WorkerState()
        self.validate = config.get("validate")  # check the state machine after every event
        self.store = Store()  # results and scattered values
        self.fetched = Store()  # values fetched from peers, held while queued tasks need them
        self.registry = shm.Registry()  # segments this worker created or adopted
        self.arena: arena.Arena | None = None  # made once the scheduler names the cluster
        self.shared: dict[str, dataplane.Frames] = {}  # key -> serialized form, with segments
        # shared memory needs every peer on this host: true for ipc, not for tcp
        self.use_shm = self.address.startswith("ipc://") and not self.codec.local
        if self.address.startswith("tcp://") and config.get("compression") != "none":
            compression.preload()  # peers will be sent compressed buffers
        self.memory = MemoryManager(memory_limit if not self.codec.local else None, name=self.name,
                                    store=self.store, fetched=self.fetched, shared=self.shared,
                                    registry=self.registry, wake=self.waker.wake)
        if memory_limit and not self.codec.local:
            bufpool.pool.limit = int(memory_limit * config.get("receive_pool"))
        cap = config.get("transfer_bytes_in_flight")
        self.state.cap = min(cap, memory_limit // 4) if memory_limit else cap
        self.executor: Executor | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self.worker_id: int | None = None
        self.cluster_id: str | None = None
        self.started = threading.Event()
        self.on_ready: Callable[[], None] | None = None  # called once registered (tells the nanny)
        self.error: BaseException | None = None
        recorder.source = self.name
        self.telemetry = config.get("telemetry")  # off only for the overhead benchmark
        enable_telemetry(self.telemetry)
        self.shipper = Shipper(recorder)

    # ----------------------------------------------------------- lifecycle
    def start(self) -> Worker:
        self._thread = threading.Thread(target=self._run_safely, name=f"frisky-worker-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run_safely(self) -> None:
        try:
            self.run()
        except BaseException as e:  # noqa: BLE001 - reported to whoever started us
            self.error = e
            self.started.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self.waker.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _hello(self) -> None:
        info = {
            "name": self.name, "address": self.address, "nthreads": self.nthreads,
            "memory_limit": self.memory_limit, "pid": os.getpid(), "host": socket.gethostname(),
        }
        self.sock.send_multipart([protocol.header(protocol.HELLO_WORKER, info)])
        # the hello waits in the socket until a scheduler listens there; stop() ends the wait
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.waker.rfd, zmq.POLLIN)
        deadline = time.monotonic() + self.connect_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no scheduler answered at {self.scheduler_address} within {self.connect_timeout}s")
            events = dict(poller.poll(int(left * 1000) + 1))
            if self._stop:
                raise Stopped()
            if self.sock in events:
                break
            self.waker.drain()
        try:
            msg = protocol.parse_to_worker(self.sock.recv_multipart())
        except protocol.ProtocolError as e:
            raise ConnectionError(f"a malformed answer from the scheduler: {e.why}") from None
        if type(msg) is protocol.Refused:
            raise ConnectionRefusedError(f"the scheduler at {self.scheduler_address} refused worker "
                                         f"{self.name!r}: {msg.reason}")
        if type(msg) is not protocol.Welcome:
            raise ConnectionError(f"unexpected answer from scheduler: {type(msg).__name__}")
        self.worker_id, self.cluster_id = msg.id, msg.cluster_id
        if self.use_shm and self.arena is None:
            self.arena = self.memory.arena = _make_arena(self.cluster_id, self.shm_limit, self.shm_host)

    def run(self) -> None:
        """Register with the scheduler and serve until told to close or it goes silent."""
        try:
            # threads first: once the scheduler has a worker, it has all of the worker's threads
            self.executor = Executor(self.nthreads, self.codec, inline_threshold=self.inline_threshold,
                                     keep=self.keep, value=self.value, memory=self.memory, wake=self.waker.wake,
                                     ref=self.ref if self.use_shm else None)
            try:
                self._hello()
            except Stopped:
                return
            self.started.set()
            if self.on_ready is not None:
                self.on_ready()
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.peers.sock, zmq.POLLIN)
        poller.register(self.waker.rfd, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        self.peers.poller = poller
        peers = self.peers
        last_heard = time.monotonic()
        next_beat = last_heard + self.interval
        monitor = self.monitor_interval
        next_check = last_heard + monitor
        executor = self.executor
        while not self._stop:
            if executor.active:
                timeout_ms = 1
            else:
                timeout_ms = max(0, int((min(next_beat, next_check) - time.monotonic()) * 1000)) + 1
            for item, _ in poller.poll(timeout_ms):
                if item is self.sock:
                    last_heard = time.monotonic()
                    self._read_scheduler()
                elif item is peers.sock:
                    peers.serve()
                elif item == self.waker.rfd:
                    self.waker.drain()
                elif item is self._monitor:
                    if self._scheduler_gone():
                        return
                else:
                    peers.read(item)
            self._report()
            t = time.monotonic()
            if t >= next_check:
                self.memory.check()
                next_check = t + monitor
            if t >= next_beat:
                if t - last_heard > self.timeout:
                    log.warning("worker %s: the scheduler at %s was silent for %ss", self.name,
                                self.scheduler_address, self.timeout)
                    self.lost = True
                    return
                self._heartbeat()
                next_beat = t + self.interval

    def _scheduler_gone(self) -> bool:
        """Read the monitor's events; True if the scheduler's connection closed."""
        from zmq.utils.monitor import recv_monitor_message

        gone = False
        while self._monitor.poll(0):
            gone |= recv_monitor_message(self._monitor)["event"] == zmq.EVENT_DISCONNECTED
        if gone and not self._stop:  # not after the scheduler told us to close
            log.warning("worker %s: lost the scheduler at %s", self.name, self.scheduler_address)
            self.lost = True
        return gone

    def _shutdown(self) -> None:
        if self.executor is not None:
            # a lost scheduler wants none of the results: drop the queued batches and do not
            # wait for the running ones
            self.executor.stop(drop_queued=self.lost)
            self.executor.join(0.0 if self.lost else 2.0)
        if self._monitor is not None:
            self.sock.disable_monitor()
            self._monitor.close(0)
        if self.lost:
            self.sock.close(0)  # what was queued for the old scheduler must not reach a new one
        else:
            try:
                self.sock.send_multipart([protocol.header(protocol.BYE)], zmq.NOBLOCK)
            except zmq.ZMQError:  # cannot queue it: the scheduler learns from missed heartbeats instead
                log.debug("worker %s: bye not sent", self.name, exc_info=True)
            sockets.close_flushing(self.sock)  # the bye must arrive
        self.peers.close()
        if self.address.startswith("inproc://"):
            sockets.unregister_inproc(self.address)
        elif self.address.startswith("ipc://"):
            try:
                os.unlink(self.address[len("ipc://"):])
            except OSError:  # gone already (its directory removed by the cluster): nothing to do
                pass
        self.waker.close()
        self.store.clear()
        self.fetched.clear()
        self.shared.clear()
        self.registry.release_all()
        if self.arena is not None:
            self.arena.close()
        self.memory.close()

    # ------------------------------------------------------------ messages
    def _read_scheduler(self) -> None:
        for _ in range(1000):
            frames = sockets.recv(self.sock)
            if frames is None:
                return
            try:
                msg = protocol.parse_to_worker(frames)
            except protocol.ProtocolError as e:
                self.dropped("the scheduler", e.op, e.why)
                continue
            kind = type(msg)
            try:
                if kind is protocol.Compute:
                    self._compute(msg)
                elif kind is protocol.Free:
                    for k in msg.keys:
                        self.free(k)
                elif kind is protocol.CancelTasks:
                    self._do(self.state.cancel(msg.tids))
                elif kind is protocol.Store:
                    self._store(msg)
                elif kind is protocol.Close:
                    self._stop = True
                    return
            except Exception as e:  # noqa: BLE001 - our bug: the worker keeps serving
                self.dropped("the scheduler", kind.__name__, f"{type(e).__name__}: {e}", exc_info=e)

    def _compute(self, msg: protocol.Compute) -> None:
        tids, keys, fidx, fids, deps = msg.tids, msg.keys, msg.fidx, msg.fids, msg.deps
        b = Batch(msg.inline, dict(zip(fids, msg.fn_blobs)))
        payloads = msg.payloads
        new = tuple.__new__  # a Task per call, without the namedtuple's Python-level __new__
        if type(fidx) is int:
            fid = fids[fidx]
            if deps is None:
                tasks = [new(Task, (t, k, fid, p, None, b)) for t, k, p in zip(tids, keys, payloads)]
            else:
                tasks = [new(Task, (t, k, fid, p, d, b)) for t, k, p, d in zip(tids, keys, payloads, deps)]
        else:
            ds = deps if deps is not None else itertools.repeat(None)
            tasks = [new(Task, (t, k, fids[i], p, d, b)) for t, k, i, p, d in zip(tids, keys, fidx, payloads, ds)]
        values, viewed = self._view_refs(msg.where) if self.use_shm else (None, None)
        self._do(self.state.compute(tasks, msg.where, self.has, viewed), values)

    def _view_refs(self, where: dict[str, list]) -> tuple[dict | None, dict | None]:
        """The dependencies a same-host holder's reference lets this worker view at once,
        with no request to the holder (values, and nbytes by key); one that cannot be viewed
        (freed since, malformed) is fetched as usual."""
        values = viewed = None
        t0 = time.time()
        by_holder: dict[str, list] = {}  # address -> [first key, address, nkeys, nbytes, seconds]
        for k, spec in where.items():
            if len(spec) < 3 or self.has(k):
                continue
            try:
                v = dataplane.from_reference(spec[2])
            except Exception as e:  # noqa: BLE001 - a stale or bad reference: ask the holder
                log.debug("worker %s: reference to %r not viewed: %s", self.name, k, e)
                continue
            if values is None:
                values, viewed = {}, {}
            values[k] = v
            viewed[k] = spec[1]
            entry = by_holder.get(spec[0])
            if entry is None:
                by_holder[spec[0]] = [k, spec[0], 1, spec[1], 0.0]
            else:
                entry[2] += 1
                entry[3] += spec[1]
        if by_holder:  # transfers as the dashboard shows them: moved by reference, no bytes sent
            seconds = time.time() - t0
            for entry in by_holder.values():
                entry[4] = seconds
                self.peers.finished.append(entry)
        return values, viewed

    def ref(self, key: str) -> bytes | None:
        """A held result's same-host reference (for the scheduler to forward), or None."""
        frames = self.shared.get(key)
        return dataplane.reference(frames) if frames is not None else None

    def _do(self, instructions: list, values: dict | None = None) -> None:
        """Carry out what the state machine says; ``values``: those a peer just sent."""
        for ins in instructions:
            kind = type(ins)
            if kind is Execute:
                self.executor.run(ins)
            elif kind is Fetch:
                self.peers.fetch(ins.address, ins.keys)
            elif kind is Keep:
                self.fetched.put(ins.key, values[ins.key], ins.nbytes)
            elif kind is Release:
                for k in ins.keys:
                    self.fetched.pop(k)
            elif kind is Skip:
                self.executor.skip.update(ins.tids)
            elif kind is Unskip:
                self.executor.skip.difference_update(ins.tids)
            else:  # a message for the scheduler
                self._send(*ins.encode())
        if self.validate:
            self.state.validate()

    def received(self, values: dict[str, Any], missing: list[str], address: str) -> None:
        """A peer answered a fetch (called by :class:`~frisky.worker.peers.Peers`)."""
        self._do(self.state.got(values, missing, address), values)

    def peer_lost(self, address: str) -> None:
        """The peer at ``address`` cannot be reached: its fetches failed."""
        self._do(self.state.peer_lost(address))

    def keep(self, key: str, value: Any) -> int:
        """Hold a large result: its big buffers move into shared memory once, now. Returns nbytes."""
        # over the memory target the value is about to be spilled: copying it into shared
        # memory first would only cost a copy (under it, the arena's warm pages make the
        # copy cheap, and every reader on the host then views it without a request)
        if self.use_shm and self.cluster_id and self.memory.headroom(sizeof(value)):
            t0 = now()
            frames = dataplane.dumps(value)
            if len(frames) > 1:
                frames = dataplane.share(frames, self.cluster_id, self.registry, self.shm_threshold,
                                         arena=self.arena)
                if dataplane.is_shared(frames):
                    value = dataplane.loads(dataplane.views(frames))  # views: the heap copy goes
                    self.shared[key] = frames
            recorder.span("worker.serialize.share", t0, key.partition("-")[0])
        nbytes = sizeof(value)
        self.store.put(key, value, nbytes)
        self.memory.check()
        return nbytes

    def has(self, key: str) -> bool:
        """Whether this worker holds ``key``, in memory or on disk."""
        return key in self.store or self.memory.has(key)

    def value(self, key: str) -> Any:
        """The value of ``key``: held, fetched from a peer, or read back from disk if it was spilled."""
        value = self.store.get(key, _MISSING)
        if value is _MISSING:
            value = self.fetched.get(key, _MISSING)
            if value is _MISSING:
                value = self.memory.unspill(key)
        return value

    def free(self, key: str) -> None:
        self.store.pop(key)
        if self.memory.forget(key):
            return  # its spill write still reads the buffers: released when it ends
        frames = self.shared.pop(key, None)
        if frames is not None:
            dataplane.release(frames, self.registry)

    def _store(self, msg: protocol.Store) -> None:
        """Hold scattered values; one that cannot be decoded errs its task alone."""
        frames = msg.frames
        pos = 0
        ok_tids, nbytes = [], []
        err_tids, err_blobs, err_tbs = [], [], []
        for tid, k, descs in zip(msg.tids, msg.keys, msg.descs):
            n = dataplane.count_frames(descs)
            part = frames[pos:pos + n]
            pos += n
            try:
                size = self._store_one(k, descs, part)
            except Exception as e:  # noqa: BLE001 - a bad pickle, segment or codec from the client
                err_tids.append(tid)
                err_blobs.append(self.codec.dumps_exception(e))
                err_tbs.append(f"cannot store scattered {k!r}: {e!r}")
                continue
            ok_tids.append(tid)
            nbytes.append(size)
        if ok_tids:
            self._send(protocol.header(protocol.FINISHED, ok_tids, nbytes, []), pack([None] * len(ok_tids)))
        if err_tids:
            self._send(protocol.header(protocol.ERRED, err_tids, err_tbs), pack(err_blobs))

    def _store_one(self, k: str, descs: list, frames: list) -> int:
        own = f"{shm.PREFIX}{self.cluster_id}-"
        for d in descs:
            if d[0] == protocol.SHM and not d[1].startswith(own):
                raise ValueError(f"segment {d[1]!r} is not of this cluster")  # we would own and unlink it
        entries = dataplane.decode(descs, frames, segments=True)
        size = dataplane.nbytes(entries)
        if self.memory.over_target() and self.memory.put_frames(k, dataplane.views(entries), size):
            return size  # over target: straight to disk, never deserialized here
        value = dataplane.loads(dataplane.views(entries))
        for e in entries:
            if isinstance(e, shm.Segment):
                self.registry.incref(e.name)  # ownership passes from the client to us
        if any(isinstance(e, shm.Segment) for e in entries):
            shared = dataplane.Frames(entries)
            shared.itemsizes = [1] * len(entries)
            self.shared[k] = shared
        size = sizeof(value)
        self.store.put(k, value, size)
        return size

    def _report(self) -> None:
        """Feed the outcomes the executor handed back to the state machine, and send what it
        says (batched into few messages)."""
        executor = self.executor
        if executor is None:
            return
        here, done = executor.here, executor.done
        if not here and not done:
            return
        pop_here, pop_done = here.popleft, done.popleft
        self._do(self.state.finished([pop_here() for _ in range(len(here))], [pop_done() for _ in range(len(done))]))

    def _heartbeat(self) -> None:
        rss = procs.rss()
        metrics = {
            "rss": rss,
            "memory_limit": self.memory_limit,
            "memory": self.memory.stats(),
            "nbytes": self.store.nbytes,
            "keys": len(self.store),
        }
        if self.telemetry:
            metrics["telemetry"] = self._telemetry(rss or 0)
        self._send(protocol.header(protocol.HEARTBEAT, metrics))

    def _telemetry(self, rss: int) -> dict:
        """The ``telemetry`` field of a heartbeat (see :mod:`frisky.telemetry.payload`)."""
        wall = time.time()
        offset = wall - now() / 1e9
        mem = self.memory
        managed = self.store.nbytes + self.fetched.nbytes
        limit = self.memory_limit or 0
        counters = recorder.counters
        out = self.shipper.collect()
        out["v"] = 1
        out["time"] = wall
        out["memory"] = {
            "managed": managed, "unmanaged": max(0, rss - managed), "spilled": sum(mem.spilled.values()),
            "in_transit": self.state.in_flight, "recv_pool": bufpool.pool.idle_bytes, "rss": rss,
            "limit": limit, "target_at": int(limit * mem.target), "spill_at": int(limit * mem.spill_at),
            "pause_at": int(limit * mem.pause_at), "terminate_at": int(limit * config.get("memory_terminate")),
            "paused": mem.paused,
        }
        transfers = self.peers.telemetry()
        out["network"] = {"recv_bytes": transfers["recv_bytes"], "sent_bytes": transfers["sent_bytes"]}
        out["disk"] = {"read_bytes": int(counters.get("spill.bytes_read", 0) + counters.get("spill.bytes_mapped", 0)),
                       "written_bytes": int(counters.get("spill.bytes_written", 0))}
        out["transfers"] = transfers["finished"]
        out["in_flight"] = transfers["in_flight"]
        executing = []
        if self.executor is not None:
            for key, t0 in list(self.executor.current.values())[:100]:
                executing.append([key, t0 / 1e9 + offset])
        out["executing"] = executing
        out["cpu_seconds"] = time.process_time()
        return out

    def _send(self, *frames) -> None:
        try:
            sockets.send(self.sock, frames)
        except zmq.ZMQError as e:  # socket closing or scheduler gone: the heartbeat check ends the loop
            log.debug("worker %s: message to the scheduler dropped: %s", self.name, e)


def _make_arena(cluster_id: str, limit: int, host_limit: int) -> arena.Arena | None:
    """This worker's shared-memory arena, or None (values then go to segments of their own)."""
    try:
        return arena.Arena(cluster_id, limit, host_limit=host_limit) if limit >= arena.PAGE else None
    except (OSError, ValueError) as e:
        log.warning("no shared-memory arena (%s); using a segment per value", e)
        return None


def main(argv: list[str] | None = None) -> None:
    """``python -m frisky.worker.server``: the same as ``frisky worker``."""
    from frisky.cli.worker import main as run

    run(argv)


if __name__ == "__main__":
    main()
