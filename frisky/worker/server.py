"""A worker: a DEALER to the scheduler, a ROUTER for peers (:mod:`.peers`), and executor
threads (:mod:`.executor`).

The loop thread owns every socket; executor threads hand results back to it.
"""

from __future__ import annotations

import itertools
import os
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
from frisky.data.serialize import PickleCodec
from frisky.protocol import pack, unpack
from frisky.telemetry import now, recorder
from frisky.worker.executor import Executor
from frisky.worker.memory import MemoryManager
from frisky.worker.peers import Peers
from frisky.worker.state import WorkerState
from frisky.worker.store import Store, sizeof
from frisky.zmq import curve, sockets, zap

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
        self.ctx = ctx or zmq.Context.instance()
        self.codec = codec or PickleCodec()
        self.inline_threshold = config.get("inline_threshold")
        self.interval = config.get("heartbeat_interval", heartbeat_interval)
        self.timeout = config.get("heartbeat_timeout", heartbeat_timeout)
        self.connect_timeout = config.get("connect_timeout", connect_timeout)
        if listen_address is None:
            host = config.get("host")
            listen_address = f"tcp://{host}:0"
        self.keys = keys  # CURVE to the scheduler and between peers (see frisky.zmq.curve)
        if keys is not None:
            zap.set_policy(curve.policy(keys))
        self.peers = Peers(self, listen_address)
        self.address = self.peers.address
        if self.address.startswith("inproc://"):
            sockets.register_inproc(self.address, self.ctx)
        ident = f"w-{self.name}-{os.getpid()}-{secrets.token_hex(3)}".encode()
        self.sock = sockets.dealer(self.ctx, scheduler_address, ident, keys=keys)
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
        if msg[0] == protocol.REFUSED:
            raise ConnectionRefusedError(f"the scheduler at {self.scheduler_address} refused worker "
                                         f"{self.name!r}: {msg[1] if len(msg) > 1 else '(no reason given)'}")
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
        poller.register(self.peers.sock, zmq.POLLIN)
        poller.register(self.waker.rfd, zmq.POLLIN)
        self.peers.poller = poller
        peers = self.peers
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
                elif item is peers.sock:
                    peers.serve()
                elif item == self.waker.rfd:
                    self.waker.drain()
                else:
                    peers.read(item)
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
        self.peers.close()
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
            self.peers.fetch(address, dep_keys)

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
