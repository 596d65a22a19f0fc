"""The scheduler process: one ROUTER socket around :class:`SchedulerState`.

Reads every message that is waiting, feeds the state machine, then sends what
``flush`` returns, so one wake-up answers many messages with few. It never unpickles:
payload frames pass through as opaque bytes.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time

import zmq

from frisky import config, protocol
from frisky.protocol import pack, unpack
from frisky.scheduler.instructions import (
    Cancel,
    Compute,
    Erred,
    Free,
    ReleaseBlobs,
    Results,
    Running,
)
from frisky.scheduler.state import SchedulerState
from frisky.scheduler.workers import Refused
from frisky.telemetry import now, recorder
from frisky.zmq import sockets

log = logging.getLogger("frisky.scheduler")


class SchedulerServer:
    """Serve :class:`SchedulerState` on ``address`` (tcp, ipc or inproc)."""

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:8786",
        *,
        ctx: zmq.Context | None = None,
        cluster_id: str | None = None,
        local_table=None,
        dashboard_address: str | None = None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
    ) -> None:
        self.ctx = ctx or zmq.Context.instance()  # inproc: the caller passes its own context
        if cluster_id is None:
            from frisky.shm import new_cluster_id

            cluster_id = new_cluster_id()
        self.cluster_id = cluster_id
        self.table = local_table
        self.state = SchedulerState(local=local_table is not None)
        self.sock, self.address = sockets.router(self.ctx, address)
        if self.address.startswith("inproc://"):
            sockets.register_inproc(self.address, self.ctx)
        self.waker = sockets.Waker()
        self.interval = config.get("heartbeat_interval", heartbeat_interval)
        self.timeout = config.get("heartbeat_timeout", heartbeat_timeout)
        self.idents: dict[bytes, tuple[str, int]] = {}  # routing id -> ("client"|"worker", id)
        self.client_ident: dict[int, bytes] = {}
        self.worker_ident: dict[int, bytes] = {}
        self.last_seen: dict[bytes, float] = {}
        self._waiters: list[tuple] = []  # pending wait-workers requests
        self.pidfds: dict[int, int] = {}  # fd -> worker index, for workers on this host
        self._cids = itertools.count(1)
        self._stop = False
        self._thread: threading.Thread | None = None
        self.host = socket.gethostname()
        self.dashboard = None
        self.dashboard_address = dashboard_address
        self.started = threading.Event()
        recorder.source = "scheduler"

    # ----------------------------------------------------------- lifecycle
    def start(self) -> SchedulerServer:
        """Run the loop in a daemon thread (in-process clusters)."""
        self._thread = threading.Thread(target=self.run, name="frisky-scheduler", daemon=True)
        self._thread.start()
        self.started.wait(5)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self.waker.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run(self) -> None:
        """The loop: read everything waiting, decide, send; until stopped."""
        if self.dashboard_address:
            from frisky.dashboard.server import start_dashboard

            self.dashboard = start_dashboard(self, self.dashboard_address)
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.waker.rfd, zmq.POLLIN)
        self._poller = poller
        self.started.set()
        next_beat = time.monotonic() + self.interval
        try:
            while not self._stop:
                timeout_ms = max(0, int((next_beat - time.monotonic()) * 1000)) + 1
                events = poller.poll(timeout_ms)
                for fd_or_sock, _ in events:
                    if fd_or_sock is self.sock:
                        self._read_all()
                    elif fd_or_sock == self.waker.rfd:
                        self.waker.drain()
                    else:
                        self._worker_process_died(fd_or_sock)
                self._send(self.state.flush())
                t = time.monotonic()
                if t >= next_beat:
                    self._heartbeat(t)
                    next_beat = t + self.interval
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for ident in list(self.worker_ident.values()) + list(self.client_ident.values()):
            self._send_raw(ident, [protocol.header(protocol.CLOSE)])
        for fd in list(self.pidfds):
            os.close(fd)
        self.pidfds.clear()
        if self.dashboard is not None:
            self.dashboard.stop()
        if self.address.startswith("inproc://"):
            sockets.unregister_inproc(self.address)
        self.sock.close(0)
        self.waker.close()

    # ------------------------------------------------------------- reading
    def _read_all(self) -> None:
        sock = self.sock
        recv = sockets.recv
        for _ in range(10000):
            frames = recv(sock)
            if frames is None:
                return
            ident = frames[0]
            try:
                self._handle(ident, frames)
            except Exception as e:  # a bad message must not take the scheduler down
                import traceback

                traceback.print_exc()
                kind = self.idents.get(ident)
                if kind and kind[0] == "client":
                    self._send_raw(ident, [protocol.header(protocol.REPLY, -1, f"scheduler error: {e!r}")])

    def _handle(self, ident: bytes, frames: list[bytes]) -> None:
        msg = unpack(frames[1])
        op = msg[0]
        t0 = now()
        who = self.idents.get(ident)
        state = self.state
        if op == protocol.WHERE:
            self._reply(ident, msg[1], state.where(msg[2]))
            return
        if op == protocol.INFO:
            self._reply(ident, msg[1], self.info())
            return
        if op == protocol.WAIT_WORKERS:
            self._waiters.append((ident, msg[1], msg[2], time.monotonic() + msg[3]))
            self._check_waiters()
            return
        if who is None:
            if op == protocol.HELLO_CLIENT:
                self._hello_client(ident, msg)
            elif op == protocol.HELLO_WORKER:
                self._hello_worker(ident, msg)
            return
        self.last_seen[ident] = time.monotonic()
        kind, i = who
        if kind == "worker":
            if op == protocol.FINISHED:
                state.finished(i, msg[1], msg[2], unpack(frames[2]), msg[3])
            elif op == protocol.ERRED:
                state.erred(i, msg[1], unpack(frames[2]), msg[2])
            elif op == protocol.CANCELLED:
                state.cancelled(i, msg[1])
            elif op == protocol.MISSING:
                state.missing(i, msg[1], msg[2])
            elif op == protocol.HEARTBEAT:
                state.heartbeat(i, msg[1])
            elif op == protocol.BYE:
                self._remove_worker(i)
        else:
            if op == protocol.SUBMIT:
                _, keys, fidx, fids, deps, retries, priority, workers, track, released = msg
                if released:
                    state.release(i, released)
                state.submit(i, keys, fidx, fids, frames[3:], unpack(frames[2]), deps, retries, priority, workers,
                             track)
            elif op == protocol.RELEASE or op == protocol.CANCEL:
                state.release(i, msg[1])
            elif op == protocol.CANCEL_QUEUED:
                self._send(state.flush())  # hand out what workers have room for first
                self._reply(ident, msg[1], state.cancel_queued(i, msg[2]))
            elif op == protocol.SCATTER:
                self._scatter(i, msg, frames[2:])
            elif op == protocol.BYE:
                self._remove_client(ident, i)
        recorder.span("scheduler.handle." + op, t0)

    def _hello_client(self, ident: bytes, msg: list) -> None:
        cid = next(self._cids)
        self.idents[ident] = ("client", cid)
        self.last_seen[ident] = time.monotonic()
        self.client_ident[cid] = ident
        self.state.add_client(cid)
        self._send_raw(ident, [protocol.header(protocol.WELCOME, cid, self.cluster_id, self.info())])

    def _hello_worker(self, ident: bytes, msg: list) -> None:
        info = msg[1]
        try:
            w = self.state.add_worker(info)
        except Refused as e:
            log.warning("worker %s (%s) refused: %s", info.get("name"), info.get("address"), e)
            self._send_raw(ident, [protocol.header(protocol.REFUSED, str(e))])
            return
        self.idents[ident] = ("worker", w)
        self.last_seen[ident] = time.monotonic()
        self.worker_ident[w] = ident
        pid = info.get("pid")
        if pid and info.get("host") == self.host and hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(pid)
            except OSError:  # already gone, or not ours to watch: the heartbeat covers it
                fd = None
            if fd is not None:
                self.pidfds[fd] = w
                self._poller.register(fd, zmq.POLLIN)
        wi = self.state.workers[w]
        log.info("worker %s (%s) joined", wi.name, wi.address)
        self._send_raw(ident, [protocol.header(protocol.WELCOME, w, self.cluster_id, {})])
        self._check_waiters()

    def _check_waiters(self, t: float | None = None) -> None:
        """Answer ``wait-workers`` requests that are satisfied, or out of time."""
        if not self._waiters:
            return
        n_alive = len(self.state.alive_workers())
        keep = []
        for ident, req, n, deadline in self._waiters:
            if n_alive >= n:
                self._reply(ident, req, True)
            elif t is not None and t > deadline:
                self._reply(ident, req, False)
            else:
                keep.append((ident, req, n, deadline))
        self._waiters = keep

    def _scatter(self, cid: int, msg: list, frames: list) -> None:
        _, keys, descs_all, workers = msg
        inline = []
        spans = {}
        pos = 0
        for key, descs in zip(keys, descs_all):
            if descs is None:  # one small frame: the scheduler keeps it
                inline.append(frames[pos])
                pos += 1
                continue
            n = sum(1 for d in descs if d[0] != 1)  # shared-memory descriptors carry no frame
            inline.append(None)
            spans[key] = (descs, frames[pos:pos + n])
            pos += n
        per_worker: dict[int, list[int]] = {}
        for tid, w in self.state.scatter(cid, keys, inline, workers):
            per_worker.setdefault(w, []).append(tid)
        for w, tids in per_worker.items():
            skeys = [self.state.tkey[t] for t in tids]
            out_frames: list = []
            descs_out = []
            for k in skeys:
                descs, fr = spans[k]
                descs_out.append(descs)
                out_frames.extend(fr)
            self._send_raw(self.worker_ident[w], [protocol.header(protocol.STORE, tids, skeys, descs_out), *out_frames])

    def _remove_client(self, ident: bytes, cid: int) -> None:
        self.idents.pop(ident, None)
        self.client_ident.pop(cid, None)
        self.last_seen.pop(ident, None)
        self.state.remove_client(cid)

    def _remove_worker(self, w: int, reason: str = "said bye") -> None:
        ident = self.worker_ident.pop(w, None)
        if ident is not None:
            self.idents.pop(ident, None)
            self.last_seen.pop(ident, None)
        for fd, fw in list(self.pidfds.items()):
            if fw == w:
                self._poller.unregister(fd)
                os.close(fd)
                del self.pidfds[fd]
        if self.state.remove_worker(w):
            wi = self.state.workers[w]
            log.info("worker %s (%s) died: %s", wi.name, wi.address, reason)

    def _worker_process_died(self, fd: int) -> None:
        w = self.pidfds.get(fd)
        if w is not None:
            self._remove_worker(w, "process exited")

    def _heartbeat(self, t: float) -> None:
        self._check_waiters(t)
        if self.dashboard is not None:
            self.dashboard.snapshot = self.info()
        beat = [protocol.header(protocol.HEARTBEAT)]
        for ident, last in list(self.last_seen.items()):
            who = self.idents.get(ident)
            if who is None:
                continue
            if t - last > self.timeout:
                if who[0] == "worker":
                    self._remove_worker(who[1], f"heartbeat timeout ({t - last:.0f} s silent)")
                else:
                    self._remove_client(ident, who[1])
                continue
            self._send_raw(ident, beat)

    # ------------------------------------------------------------- writing
    def _send_raw(self, ident: bytes, frames: list) -> None:
        try:
            sockets.send(self.sock, [ident, *frames], len(frames) < 3)
        except zmq.ZMQError:  # peer gone (ROUTER_MANDATORY): its removal follows
            pass

    def _reply(self, ident: bytes, req: int, value) -> None:
        self._send_raw(ident, [protocol.header(protocol.REPLY, req, value)])

    def _send(self, instructions: list) -> None:
        """Send each instruction of :meth:`SchedulerState.flush` as its message."""
        send = self._send_raw
        for ins in instructions:
            kind = type(ins)
            if kind is Compute:
                send(self.worker_ident[ins.worker], [
                    protocol.header(protocol.COMPUTE, ins.tids, ins.keys, ins.fidx, ins.fids, ins.deps, ins.where),
                    pack([ins.payloads, ins.fn_blobs, ins.inline]),
                ])
            elif kind is Results:
                ident = self.client_ident.get(ins.client)
                if ident is not None:
                    send(ident, [protocol.header(protocol.RESULTS, ins.keys), pack(ins.blobs)])
            elif kind is Running:
                ident = self.client_ident.get(ins.client)
                if ident is not None:
                    send(ident, [protocol.header(protocol.RUNNING, ins.keys)])
            elif kind is Erred:
                ident = self.client_ident.get(ins.client)
                if ident is not None:
                    send(ident, [protocol.header(protocol.ERRED, ins.keys, ins.tracebacks), pack(ins.excs)])
            elif kind is Free:
                send(self.worker_ident[ins.worker], [protocol.header(protocol.FREE, ins.keys)])
            elif kind is Cancel:
                send(self.worker_ident[ins.worker], [protocol.header(protocol.CANCEL, ins.tids)])
            elif kind is ReleaseBlobs:
                if self.table is not None:
                    self.table.release(ins.blobs)
            else:
                raise TypeError(f"unknown instruction {ins!r}")

    # --------------------------------------------------------------- views
    def info_without_dashboard(self) -> dict:
        info = self.state.info()
        info["address"] = self.address
        info["cluster_id"] = self.cluster_id
        info["pid"] = os.getpid()
        return info

    def info(self) -> dict:
        info = self.info_without_dashboard()
        info["dashboard"] = self.dashboard.address if self.dashboard is not None else None
        return info


def tune_gc() -> None:
    """GC settings for a process that runs only a scheduler.

    The state holds a few containers per task (dependency tuples, dependent lists) and
    makes no reference cycles: with the default thresholds, generation-1 passes over a
    large graph took a fifth of the scheduler's time. Young cycles are still collected.
    """
    import gc

    gc.freeze()  # what exists at start-up lives as long as the process
    gc.set_threshold(100_000, 1000, 1000)


def main(argv: list[str] | None = None) -> None:
    """``frisky scheduler`` / ``python -m frisky.scheduler.server``."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="frisky scheduler", description="Run a Frisky scheduler.")
    parser.add_argument("--host", default=config.get("host"), help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=config.get("scheduler_port"))
    parser.add_argument("--address", default=None, help="full address to bind instead (tcp/ipc)")
    parser.add_argument("--dashboard-address", default=None, help="host:port for the dashboard, e.g. :8787")
    parser.add_argument("--cluster-id", default=None)
    parser.add_argument("--announce-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="do not print the address")
    args = parser.parse_args(argv)
    address = args.address or f"tcp://{args.host}:{args.port}"
    server = SchedulerServer(address, cluster_id=args.cluster_id, dashboard_address=args.dashboard_address)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    if not args.quiet:
        print(f"frisky scheduler at {server.address}", flush=True)
    if args.announce_fd is not None:  # a LocalCluster waits for the address it picked
        os.write(args.announce_fd, (server.address + "\n").encode())
        os.close(args.announce_fd)
    tune_gc()
    server.run()


if __name__ == "__main__":
    main()
