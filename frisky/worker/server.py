"""A worker: a DEALER to the scheduler, a ROUTER for peers, and executor threads.

The loop thread owns every socket. Executor threads run batches of tasks and hand
results back through a deque and a :class:`~frisky.zmq.sockets.Waker`, reporting
each as it is ready, so no result waits behind a long task. Calls of a function whose
recent calls were all tiny run on the loop thread itself when nothing else is queued:
two thread handoffs would cost more than the call.
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from frisky import config, protocol, shm
from frisky.data import bufpool, compression, dataplane
from frisky.data.deps import substitute
from frisky.data.serialize import PickleCodec, format_exception
from frisky.protocol import pack, unpack
from frisky.telemetry import now, recorder
from frisky.worker.memory import MemoryManager
from frisky.worker.state import WorkerState
from frisky.worker.store import Store, sizeof
from frisky.zmq import sockets


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


_MISSING = object()
# inline on the loop thread: a function whose last _FAST_STREAK calls each took under
# _FAST_NS, in batches of at most _FAST_BATCH (a few ms at most, so peers and heartbeats
# wait little; one that turns slow after such a streak still blocks the loop that once)
_FAST_NS = 100_000
_FAST_STREAK = 16
_FAST_BATCH = 64
_SMALL = frozenset({int, float, bool, type(None), complex})


class Worker:
    """One worker. ``run()`` blocks; ``start()`` runs it in a thread (in-process clusters)."""

    def __init__(
        self,
        scheduler_address: str,
        *,
        name: str | None = None,
        nthreads: int = 1,
        memory_limit: int | None = None,
        listen_address: str | None = None,
        ctx: zmq.Context | None = None,
        codec=None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.scheduler_address = scheduler_address
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.ctx = ctx or zmq.Context.instance()
        self.codec = codec or PickleCodec()
        self.inline_threshold = config.get("inline_threshold")
        self.interval = config.get("heartbeat_interval", heartbeat_interval)
        self.timeout = config.get("heartbeat_timeout", heartbeat_timeout)
        self.connect_timeout = config.get("connect_timeout", connect_timeout)
        if listen_address is None:
            host = config.get("host")
            listen_address = f"tcp://{host}:0"
        self.peer_sock, self.address = sockets.router(self.ctx, listen_address)
        if self.address.startswith("inproc://"):
            sockets.register_inproc(self.address, self.ctx)
        ident = f"w-{self.name}-{os.getpid()}-{secrets.token_hex(3)}".encode()
        self.sock = sockets.dealer(self.ctx, scheduler_address, ident)
        self.waker = sockets.Waker()
        self.state = WorkerState()
        self.store = Store()
        self.registry = shm.Registry()  # segments this worker created or adopted
        self.shared: dict[str, dataplane.Frames] = {}  # key -> serialized form, with segments
        # shared memory needs every peer on this host: true for ipc, not for tcp
        self.use_shm = self.address.startswith("ipc://") and not self.codec.local
        if self.address.startswith("tcp://") and config.get("compression") != "none":
            compression.preload()  # peers will be sent compressed buffers
        self.memory = MemoryManager(self, memory_limit if not self.codec.local else None)
        if memory_limit and not self.codec.local:
            bufpool.pool.limit = int(memory_limit * config.get("receive_pool"))
        cap = config.get("transfer_bytes_in_flight")
        self.state.cap = min(cap, memory_limit // 4) if memory_limit else cap
        self.executor: Executor | None = None
        self.peers: dict[str, zmq.Socket] = {}
        self.peer_of_sock: dict[zmq.Socket, str] = {}
        self.incoming: dict[zmq.Socket, tuple] = {}  # peer socket -> (streamed reply, start)
        self._reqs = itertools.count(1)
        self._stop = False
        self._thread: threading.Thread | None = None
        self.worker_id: int | None = None
        self.cluster_id: str | None = None
        self.started = threading.Event()
        self.on_ready: Callable[[], None] | None = None  # called once registered (tells the nanny)
        self.error: BaseException | None = None
        recorder.source = self.name

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
        if not self.sock.poll(int(self.connect_timeout * 1000)):
            raise TimeoutError(f"no scheduler answered at {self.scheduler_address} within {self.connect_timeout}s")
        msg = unpack(self.sock.recv_multipart()[0])
        if msg[0] != protocol.WELCOME:
            raise ConnectionError(f"unexpected answer from scheduler: {msg[0]!r}")
        self.worker_id, self.cluster_id = msg[1], msg[2]

    def run(self) -> None:
        """Register with the scheduler and serve until told to close or it goes silent."""
        try:
            # threads first: once the scheduler has a worker, it has all of the worker's threads
            self.executor = Executor(self, self.nthreads)
            self._hello()
            self.started.set()
            if self.on_ready is not None:
                self.on_ready()
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.peer_sock, zmq.POLLIN)
        poller.register(self.waker.rfd, zmq.POLLIN)
        self._poller = poller
        last_heard = time.monotonic()
        next_beat = last_heard + self.interval
        monitor = config.get("memory_monitor_interval")
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
                elif item is self.peer_sock:
                    self._serve_peers()
                elif item == self.waker.rfd:
                    self.waker.drain()
                else:
                    self._read_peer(item)
            self._report()
            t = time.monotonic()
            if t >= next_check:
                self.memory.check()
                next_check = t + monitor
            if t >= next_beat:
                if t - last_heard > self.timeout:
                    print(f"frisky worker {self.name}: scheduler silent for {self.timeout}s, closing", file=sys.stderr)
                    return
                self._heartbeat()
                next_beat = t + self.interval

    def _shutdown(self) -> None:
        if self.executor is not None:
            self.executor.stop()
            self.executor.join(2.0)
        try:
            self.sock.send_multipart([protocol.header(protocol.BYE)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        sockets.close_flushing(self.sock)  # the bye must arrive
        for s in [self.peer_sock, *self.peers.values()]:
            s.close(0)
        if self.address.startswith("inproc://"):
            sockets.unregister_inproc(self.address)
        elif self.address.startswith("ipc://"):
            try:
                os.unlink(self.address[len("ipc://"):])
            except OSError:
                pass
        self.waker.close()
        self.store.clear()
        self.shared.clear()
        self.registry.release_all()
        self.memory.close()

    # ------------------------------------------------------------ messages
    def _read_scheduler(self) -> None:
        for _ in range(1000):
            frames = sockets.recv(self.sock)
            if frames is None:
                return
            msg = unpack(frames[0])
            op = msg[0]
            if op == protocol.COMPUTE:
                self._compute(msg, frames)
            elif op == protocol.FREE:
                for k in msg[1]:
                    self.free(k)
            elif op == protocol.CANCEL:
                dropped = self.state.cancel(msg[1])
                if dropped:
                    self._send(protocol.header(protocol.CANCELLED, dropped))
            elif op == protocol.STORE:
                self._store(msg, frames[1:])
            elif op == protocol.CLOSE:
                self._stop = True
                return

    def _compute(self, msg: list, frames: list) -> None:
        _, tids, keys, fidx, fids, deps, where = msg
        payloads, fn_blobs, inline = unpack(frames[1])
        ctx = {"inline": inline, "decoded": {}, "fns": dict(zip(fids, fn_blobs))}
        if type(fidx) is int:
            fid = fids[fidx]
            if deps is None:
                tasks = [(t, k, fid, p, None, ctx) for t, k, p in zip(tids, keys, payloads)]
            else:
                tasks = [(t, k, fid, p, d, ctx) for t, k, p, d in zip(tids, keys, payloads, deps)]
        else:
            ds = deps if deps is not None else itertools.repeat(None)
            tasks = [(t, k, fids[i], p, d, ctx) for t, k, i, p, d in zip(tids, keys, fidx, payloads, ds)]
        ready, fetch = self.state.compute(tasks, where, self.has)
        if ready:
            self.executor.submit(ready)
        for address, dep_keys in fetch.items():
            self._fetch(address, dep_keys)

    def keep(self, key: str, value: Any) -> int:
        """Hold a large result: its big buffers move into shared memory once, now. Returns nbytes."""
        # near the memory target the value is likely to be spilled soon: copying it into
        # shared memory first would only cost a copy (it is shared when there is headroom)
        if self.use_shm and self.cluster_id and self.memory.headroom(sizeof(value)):
            t0 = now()
            frames = dataplane.dumps(value)
            if len(frames) > 1:
                frames = dataplane.share(frames, self.cluster_id, self.registry)
                if any(isinstance(f, shm.Segment) for f in frames):
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
        """The value of ``key``, read back from disk if it was spilled."""
        value = self.store.get(key, _MISSING)
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

    def _store(self, msg: list, frames: list) -> None:
        _, tids, keys, descs_per_key = msg
        pos = 0
        nbytes = []
        for k, descs in zip(keys, descs_per_key):
            n = dataplane.count_frames(descs)
            entries = dataplane.decode(descs, frames[pos:pos + n], segments=True)
            pos += n
            size = dataplane.nbytes(entries)
            if self.memory.over_target() and self.memory.put_frames(k, dataplane.views(entries), size):
                nbytes.append(size)  # over target: straight to disk, never deserialized here
                continue
            for e in entries:
                if isinstance(e, shm.Segment):
                    self.registry.incref(e.name)  # ownership passes from the client to us
            value = dataplane.loads(dataplane.views(entries))
            if any(isinstance(e, shm.Segment) for e in entries):
                shared = dataplane.Frames(entries)
                shared.itemsizes = [1] * len(entries)
                self.shared[k] = shared
            size = sizeof(value)
            self.store.put(k, value, size)
            nbytes.append(size)
        self._send(protocol.header(protocol.FINISHED, tids, nbytes, []), pack([None] * len(tids)))

    def _report(self) -> None:
        """Send results the executor has handed back, batched into few messages."""
        done = self.executor.done if self.executor is not None else None
        if not done:
            return
        ok_tids, ok_nbytes, ok_blobs = [], [], []
        err_tids, err_blobs, err_tbs = [], [], []
        cancelled = []
        timings: dict[bytes, list] = {}
        state = self.state
        while done:
            item = done.popleft()
            kind, task = item[0], item[1]
            state.done(task)
            if kind == 0:
                ok_tids.append(task[0])
                ok_nbytes.append(item[2])
                ok_blobs.append(item[3])
                t = timings.get(task[2])
                if t is None:
                    timings[task[2]] = [task[2], 1, item[4]]
                else:
                    t[1] += 1
                    t[2] += item[4]
            elif kind == 1:
                err_tids.append(task[0])
                err_blobs.append(item[2])
                err_tbs.append(item[3])
            else:
                cancelled.append(task[0])
        if ok_tids:
            self._send(protocol.header(protocol.FINISHED, ok_tids, ok_nbytes, list(timings.values())), pack(ok_blobs))
        if err_tids:
            self._send(protocol.header(protocol.ERRED, err_tids, err_tbs), pack(err_blobs))
        if cancelled:
            self._send(protocol.header(protocol.CANCELLED, cancelled))

    def _heartbeat(self) -> None:
        metrics = {
            "rss": _rss(),
            "memory_limit": self.memory_limit,
            "memory": self.memory.stats(),
            "nbytes": self.store.nbytes,
            "keys": len(self.store),
            "telemetry": recorder.snapshot(max_spans=50),
        }
        self._send(protocol.header(protocol.HEARTBEAT, metrics))

    def _send(self, *frames) -> None:
        try:
            sockets.send(self.sock, frames)
        except zmq.ZMQError:
            pass

    # ------------------------------------------------------------ data plane
    def _serve_peers(self) -> None:
        for _ in range(1000):
            frames = sockets.recv(self.peer_sock)
            if frames is None:
                return
            ident = frames[0]
            msg = unpack(frames[1])
            if msg[0] != protocol.GET:
                continue
            t0 = now()
            req, keys, same_host = msg[1], msg[2], msg[3]
            compress = not same_host and config.get("compression") != "none"
            # peers that can take it (workers; not clients) get large buffers streamed
            streams = [] if compress and len(msg) > 4 and msg[4] else None
            found, descs_all, missing, out = [], [], [], []
            for k in keys:
                frames = self.shared.get(k)
                if frames is None:
                    if k in self.store:
                        frames = dataplane.dumps(self.store.get(k))
                    elif k in self.state.fetched:
                        frames = dataplane.dumps(self.state.fetched[k])
                    elif self.memory.has(k):  # served from disk, not loaded back into the store
                        frames = self._spilled_frames(k)
                    if frames is None:
                        missing.append(k)
                        continue
                descs, value_frames = dataplane.encode(frames, same_host, compress, streams)
                found.append(k)
                descs_all.append(descs)
                out.extend(value_frames)
            try:
                self.peer_sock.send_multipart(
                    [ident, protocol.header(protocol.DATA, req, found, descs_all, missing), *out], copy=False
                )
                if streams:
                    self._stream(ident, streams)
            except zmq.ZMQError:
                pass
            recorder.span("worker.transfer.send", t0)

    def _spilled_frames(self, key: str) -> list | None:
        """A spilled value's frames for a peer, mapped from disk; None if they cannot be read."""
        try:
            return self.memory.frames(key)
        except (OSError, KeyError) as e:  # corrupt (SpillError), gone or unmappable: reported missing
            print(f"frisky worker {self.name}: cannot serve spilled {key!r}: {e}", file=sys.stderr)
            return None

    def _stream(self, ident: bytes, streams: list) -> None:
        """Send the chunks that follow a reply, each as soon as it is compressed."""
        sock = self.peer_sock
        for payload in dataplane.chunks(streams):
            # without copying: ZeroMQ's I/O thread sends this chunk while we compress the next
            sockets.send(sock, [ident, payload], copy=False)

    def _fetch(self, address: str, keys: list[str]) -> None:
        sock = self.peers.get(address)
        if sock is None:
            try:
                sock = sockets.dealer(sockets.context_for(address) if address.startswith("inproc://") else self.ctx, address)
            except OSError:
                for tid, miss in self.state.peer_lost(address):
                    self._send(protocol.header(protocol.MISSING, tid, miss))
                return
            self.peers[address] = sock
            self.peer_of_sock[sock] = address
            self._poller.register(sock, zmq.POLLIN)
        sock.send_multipart([protocol.header(protocol.GET, next(self._reqs), keys, _same_host(address), True)])

    def _read_peer(self, sock: zmq.Socket) -> None:
        address = self.peer_of_sock.get(sock)
        while True:
            frames = sockets.recv(sock, copy=False)
            if frames is None:
                return
            incoming = self.incoming.get(sock)
            if incoming is not None:  # the next chunk of a streamed reply
                values, missing = self._chunk(sock, incoming, frames)
                if values is None:
                    continue
            else:
                t0 = now()
                _, _req, keys, descs_all, missing = unpack(frames[0].buffer)
                bufs = [f.buffer for f in frames[1:]]
                if dataplane.streamed(descs_all):
                    reply = dataplane.Incoming(keys, descs_all, bufs)
                    if reply.remaining > 0:
                        self.incoming[sock] = (reply, t0)
                        continue
                    values = reply.values()
                else:
                    values = dataplane.decode_values(keys, descs_all, bufs)
                recorder.span("worker.transfer.recv", t0)
            ready, report = self.state.got(values, missing, address)
            if ready:
                self.executor.submit(ready)
            for tid, miss in report:
                self._send(protocol.header(protocol.MISSING, tid, miss))
            for peer, more in self.state.more_fetches().items():
                self._fetch(peer, more)

    def _chunk(self, sock: zmq.Socket, incoming: tuple, frames: list) -> tuple[dict | None, list]:
        """Place one streamed chunk; the reply's values once it is complete."""
        reply, t0 = incoming
        try:
            if not reply.feed(frames[-1].buffer):
                return None, []
            values, missing = reply.values(), []
        except ValueError as e:  # a corrupt stream: its keys are missing, the tasks learn why
            print(f"frisky worker {self.name}: dropped a corrupt transfer: {e}", file=sys.stderr)
            values, missing = {}, list(reply.keys)
        del self.incoming[sock]
        recorder.span("worker.transfer.recv", t0)
        return values, missing


def _same_host(address: str) -> bool:
    """Whether a peer at ``address`` shares this host's /dev/shm (ipc and inproc do)."""
    return not address.startswith("tcp://")


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - non-Linux
        return 0


def main(argv: list[str] | None = None) -> None:
    """``python -m frisky.worker.server``: the same as ``frisky worker``."""
    from frisky.cli.worker import main as run

    run(argv)


if __name__ == "__main__":
    main()
