"""The scheduler process: one ROUTER socket around :class:`SchedulerState`.

Reads every message that is waiting, feeds the state machine, then sends what
``flush`` returns, so one wake-up answers many messages with few. It never unpickles:
payload frames pass through as opaque bytes.
"""

from __future__ import annotations

import heapq
import itertools
import os
import secrets
import socket
import threading
import time

import zmq

from frisky import config, logs, protocol
from frisky.protocol import function_id, pack
from frisky.scheduler.instructions import (
    Cancel,
    Compute,
    Erred,
    Free,
    ReleaseBlobs,
    Results,
    Running,
)
from frisky.scheduler.snapshot import Scanner
from frisky.scheduler.snapshot import build as build_snapshot
from frisky.scheduler.state import SchedulerState
from frisky.scheduler.workers import Refused
from frisky.telemetry import now, payload, recorder
from frisky.telemetry.history import History
from frisky.telemetry.recorder import enable as enable_telemetry
from frisky.telemetry.ship import Shipper
from frisky.zmq import curve, sockets, zap

log = logs.logger("scheduler")
MAX_WAITERS_PER_PEER = 64  # pending wait-workers requests one socket may have
_OPS = {
    protocol.Finished: protocol.FINISHED, protocol.Submit: protocol.SUBMIT, protocol.TaskErred: protocol.ERRED,
    protocol.Cancelled: protocol.CANCELLED, protocol.Missing: protocol.MISSING,
    protocol.WorkerHeartbeat: protocol.HEARTBEAT, protocol.Heartbeat: protocol.HEARTBEAT, protocol.Bye: protocol.BYE,
    protocol.Release: protocol.RELEASE, protocol.Cancel: protocol.CANCEL, protocol.CancelQueued: protocol.CANCEL_QUEUED,
    protocol.Scatter: protocol.SCATTER, protocol.Activity: protocol.ACTIVITY,
}
_SPAN_OF = {kind: "scheduler.handle." + op for kind, op in _OPS.items()}  # the span per message kind
SNAPSHOT_INTERVAL = 1.0  # seconds between the dashboard's snapshots (its stream ticks at this pace)
CLIENTS_KEPT = 32  # disconnected clients the dashboard still lists


def _peer(ident: bytes, who) -> str:
    """A peer as a log line names it."""
    if who is None:
        return f"unregistered peer {ident.hex()[:16]}"
    return f"{who[0]} {who[1]} ({ident.hex()[:16]})"


def _says_hello_worker(header: bytes) -> bool:
    try:
        msg = protocol.unpack(header)
        return isinstance(msg, (list, tuple)) and len(msg) > 0 and msg[0] == protocol.HELLO_WORKER
    except Exception:  # noqa: BLE001 - not even msgpack: the parser drops it and says why
        return False


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
        keys: curve.Keys | None = None,
    ) -> None:
        self.ctx = ctx or zmq.Context.instance()  # inproc: the caller passes its own context
        self.keys = keys  # CURVE: only peers with the cluster's keys connect; roles checked on hello
        if cluster_id is None:
            from frisky.shm import new_cluster_id

            cluster_id = new_cluster_id()
        self.cluster_id = cluster_id
        self.table = local_table
        self.state = SchedulerState(local=local_table is not None)
        if keys is not None:
            zap.set_policy(curve.policy(keys))
        self.sock, self.address = sockets.router(self.ctx, address, keys=keys)
        if self.address.startswith("inproc://"):
            sockets.register_inproc(self.address, self.ctx)
        self.waker = sockets.Waker()
        self.interval = config.get("heartbeat_interval", heartbeat_interval)
        self.timeout = config.get("heartbeat_timeout", heartbeat_timeout)
        self.idents: dict[bytes, tuple[str, int]] = {}  # routing id -> ("client"|"worker", id)
        self.client_ident: dict[int, bytes] = {}
        self.worker_ident: dict[int, bytes] = {}
        self.last_seen: dict[bytes, float] = {}
        self._wait_n: list = []  # heap of (n, seq, [ident, req, pending]) for wait-workers
        self._wait_t: list = []  # the same entries by deadline
        self._wseq = itertools.count()
        self._n_waiting = 0
        self._waiting_per_peer: dict[bytes, int] = {}
        self.tokens: dict[str, int] = {}
        self.client_token: dict[int, str] = {}  # client token -> client id (queries from its other sockets)
        self.dropped = logs.Dropped(log, "message")  # messages that did not parse, per op
        self.errors = logs.Dropped(log, "message (internal error)")
        self.pidfds: dict[int, int] = {}  # fd -> worker index, for workers on this host
        self._cids = itertools.count(1)
        self._stop = False
        self._thread: threading.Thread | None = None
        self.host = socket.gethostname()
        self.dashboard = None
        self.dashboard_address = dashboard_address
        self.started = threading.Event()
        recorder.source = "scheduler"
        self.started_at = time.time()
        self.telemetry = config.get("telemetry")  # off only for the overhead benchmark
        enable_telemetry(self.telemetry)
        self.history = History()
        self.scanner = Scanner()
        self.shipper = Shipper(recorder)
        self.bad_telemetry = logs.Dropped(log, "telemetry payload")  # heartbeats kept, their telemetry not
        self.client_info: dict[int, dict] = {}  # client id -> what the dashboard shows of it

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

            self.dashboard = start_dashboard(self.dashboard_address, self.history)
            self._publish()
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.waker.rfd, zmq.POLLIN)
        self._poller = poller
        self.started.set()
        next_beat = time.monotonic() + self.interval
        next_snap = time.monotonic() + SNAPSHOT_INTERVAL
        try:
            while not self._stop:
                timeout_ms = max(0, int((min(next_beat, next_snap) - time.monotonic()) * 1000)) + 1
                events = poller.poll(timeout_ms)
                for fd_or_sock, _ in events:
                    if fd_or_sock is self.sock:
                        self._read_all()
                    elif fd_or_sock == self.waker.rfd:
                        self.waker.drain()
                    else:
                        try:
                            self._worker_process_died(fd_or_sock)
                        except Exception as e:  # noqa: BLE001 - a bug must not end the cluster
                            self._failed("removing a dead worker", e)
                try:
                    self._send(self.state.flush())
                except Exception as e:  # noqa: BLE001 - a bug must not end the cluster
                    self._failed("flushing", e)
                t = time.monotonic()
                if t >= next_beat:
                    next_beat = t + self.interval
                    try:
                        self._heartbeat(t)
                    except Exception as e:  # noqa: BLE001 - a bug must not end the cluster
                        self._failed("the heartbeat", e)
                if t >= next_snap:
                    next_snap = t + SNAPSHOT_INTERVAL
                    try:
                        self._publish()
                    except Exception as e:  # noqa: BLE001 - a bug must not end the cluster
                        self._failed("the dashboard's snapshot", e)
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
        recv = sockets.recv if self.keys is None else self._recv_keyed
        idents = self.idents
        for _ in range(10000):
            frames = recv(sock)
            if frames is None:
                return
            ident = frames[0]
            who = idents.get(ident)
            try:
                if who is not None and who[0] == "worker":
                    msg = protocol.parse_from_worker(frames[1:])
                else:
                    msg = protocol.parse_from_client(frames[1:])
                self._handle(ident, who, msg)
            except protocol.ProtocolError as e:
                self._drop(ident, who, e.op, e.why)
            except Exception as e:  # noqa: BLE001 - our bug, not the peer's: keep serving the others
                self._failed(f"handling a message from {_peer(ident, who)}", e)

    def _recv_keyed(self, sock: zmq.Socket) -> list | None:
        """:func:`sockets.recv` for a keyed scheduler: only the worker key may say hello-worker."""
        while True:
            got = sockets.recv_routed(sock, self.idents)
            if got is None:
                return None
            frames, role = got
            if role in (None, curve.WORKER) or len(frames) < 2 or not _says_hello_worker(frames[1]):
                return frames
            self._drop(frames[0], None, protocol.HELLO_WORKER, f"a {role} key cannot register as a worker")

    def _drop(self, ident: bytes, who, op, why: str) -> None:
        self.dropped(_peer(ident, who), op, why)

    def _failed(self, doing: str, e: BaseException) -> None:
        self.errors(doing, type(e).__name__, str(e)[:200], exc_info=e)

    def _handle(self, ident: bytes, who, msg) -> None:
        """Apply one parsed message: every check that can refuse it comes before any change."""
        kind = type(msg)
        t0 = now()
        state = self.state
        if kind is protocol.Finished:
            self._check_tids(msg.tids)
            timings = msg.timings
            if timings:
                functions = state.functions
                timings = [t for t in timings if t[0] in functions]  # no growth from made-up fids
            state.finished(who[1], msg.tids, msg.nbytes, msg.blobs, timings, msg.refs)
        elif kind is protocol.Submit:
            if who is None:
                raise protocol.ProtocolError("submit before hello", protocol.SUBMIT)
            self._check_submit(msg)
            ci = self.client_info.get(who[1])
            if ci is not None:
                ci["tasks_total"] += len(msg.keys)
            if msg.released:
                state.release(who[1], msg.released)
            state.submit(who[1], msg.keys, msg.fidx, msg.fids, msg.fn_blobs, msg.payloads, msg.deps, msg.retries,
                         msg.priority, msg.workers, msg.track)
        elif kind is protocol.Where:
            self._reply(ident, msg.req, self._where(who, msg))
            return
        elif kind is protocol.Info:
            self._reply(ident, msg.req, self.info())
            return
        elif kind is protocol.WaitWorkers:
            self._wait_workers(ident, msg)
            return
        elif kind is protocol.HelloClient or kind is protocol.HelloWorker:
            if who is not None:
                raise protocol.ProtocolError("hello from a registered peer", protocol.HELLO_CLIENT)
            if kind is protocol.HelloClient:
                self._hello_client(ident, msg)
            else:
                self._hello_worker(ident, [protocol.HELLO_WORKER, msg.info])
            return
        elif who is None:
            raise protocol.ProtocolError("not registered (no hello)", None)
        else:
            self._handle_other(ident, who, msg)
        self.last_seen[ident] = time.monotonic()
        recorder.span(_SPAN_OF.get(kind, "scheduler.handle.other"), t0)

    def _handle_other(self, ident: bytes, who, msg) -> None:
        kind = type(msg)
        state = self.state
        i = who[1]
        if who[0] == "worker":
            if kind is protocol.TaskErred:
                self._check_tids(msg.tids)
                state.erred(i, msg.tids, msg.excs, msg.tracebacks)
            elif kind is protocol.Cancelled:
                self._check_tids(msg.tids)
                state.cancelled(i, msg.tids)
            elif kind is protocol.Missing:
                self._check_tids([msg.tid])
                state.missing(i, msg.tid, msg.keys)
            elif kind is protocol.WorkerHeartbeat:
                tele = msg.metrics.pop("telemetry", None)
                state.heartbeat(i, msg.metrics)
                if tele is not None:
                    self._telemetry(ident, who, i, tele)
            elif kind is protocol.Bye:
                self._remove_worker(i)
            return
        if kind is protocol.Release or kind is protocol.Cancel:
            state.release(i, msg.keys)
        elif kind is protocol.CancelQueued:
            self._send(state.flush())  # hand out what workers have room for first
            self._reply(ident, msg.req, state.cancel_queued(i, msg.keys))
        elif kind is protocol.Scatter:
            self._scatter(i, msg)
        elif kind is protocol.Activity:
            self._activity(i, msg)
        elif kind is protocol.Bye:
            self._remove_client(ident, i)

    def _check_tids(self, tids: list) -> None:
        if tids and max(tids) >= len(self.state.tkey):
            raise protocol.ProtocolError("unknown tid", None)

    def _check_submit(self, msg: protocol.Submit) -> None:
        """What the parser cannot see: function ids are the hash of their blob, and a
        dependency in the batch comes before its dependent (no cycles)."""
        functions = self.state.functions
        if self.table is None:  # (in-process the fid is the blob's handle itself)
            for fid, blob in zip(msg.fids, msg.fn_blobs):
                if fid not in functions and function_id(blob) != fid:
                    raise protocol.ProtocolError("a function id is not its blob's hash", protocol.SUBMIT)
        deps = msg.deps
        if deps is not None and any(deps):
            pos = {}
            for i, k in enumerate(msg.keys):
                pos.setdefault(k, i)
            known = self.state.key_tid
            for i, d in enumerate(deps):
                if d:
                    for k in d:
                        j = pos.get(k)
                        if j is not None and j >= i and k not in known:
                            raise protocol.ProtocolError("a dependency comes after its dependent", protocol.SUBMIT)

    def _where(self, who, msg: protocol.Where) -> list:
        """Where the asking client's keys are; None for keys it does not want (or anonymous asks)."""
        cid = who[1] if who is not None and who[0] == "client" else self.tokens.get(msg.token)
        wants = self.state.clients.get(cid) if cid is not None else None
        if not wants:
            return [None] * len(msg.keys)
        key_tid = self.state.key_tid
        mine = [k if key_tid.get(k) in wants else None for k in msg.keys]
        found = self.state.where([k for k in mine if k is not None])
        it = iter(found)
        return [None if k is None else next(it) for k in mine]

    # wait-workers: heaps by n and by deadline, so each check costs O(answered), not O(waiting)
    def _wait_workers(self, ident: bytes, msg: protocol.WaitWorkers) -> None:
        pending = self._waiting_per_peer.get(ident, 0)
        if pending >= MAX_WAITERS_PER_PEER:
            self._drop(ident, self.idents.get(ident), protocol.WAIT_WORKERS,
                       f"more than {MAX_WAITERS_PER_PEER} pending wait-workers")
            self._reply(ident, msg.req, False)
            return
        if len(self.state.alive_workers()) >= msg.n:
            self._reply(ident, msg.req, True)
            return
        self._waiting_per_peer[ident] = pending + 1
        entry = [ident, msg.req, True]
        seq = next(self._wseq)
        heapq.heappush(self._wait_n, (msg.n, seq, entry))
        heapq.heappush(self._wait_t, (time.monotonic() + min(msg.timeout, 1e9), seq, entry))
        self._n_waiting += 1

    def _answer_waiter(self, entry: list, value: bool) -> None:
        entry[2] = False
        self._n_waiting -= 1
        ident = entry[0]
        left = self._waiting_per_peer[ident] - 1
        if left:
            self._waiting_per_peer[ident] = left
        else:
            del self._waiting_per_peer[ident]
        self._reply(ident, entry[1], value)

    def _check_waiters(self, t: float | None = None) -> None:
        """Answer ``wait-workers`` requests that are satisfied, or out of time."""
        by_n, by_t = self._wait_n, self._wait_t
        if by_n:
            n_alive = len(self.state.alive_workers())
            while by_n and by_n[0][0] <= n_alive:
                entry = heapq.heappop(by_n)[2]
                if entry[2]:
                    self._answer_waiter(entry, True)
        if t is not None:
            while by_t and by_t[0][0] < t:
                entry = heapq.heappop(by_t)[2]
                if entry[2]:
                    self._answer_waiter(entry, False)
        # answered entries linger in the other heap: rebuild when they are most of it
        if len(by_n) > 2 * self._n_waiting + 64:
            self._wait_n = [e for e in by_n if e[2][2]]
            heapq.heapify(self._wait_n)
        if len(by_t) > 2 * self._n_waiting + 64:
            self._wait_t = [e for e in by_t if e[2][2]]
            heapq.heapify(self._wait_t)

    def _hello_client(self, ident: bytes, msg: list) -> None:
        cid = next(self._cids)
        self.idents[ident] = ("client", cid)
        self.last_seen[ident] = time.monotonic()
        self.client_ident[cid] = ident
        self.state.add_client(cid)
        self.client_info[cid] = {
            "id": cid, "name": msg.name, "connected": True, "activity": "idle", "detail": "", "tasks_total": 0,
            "tasks_done": 0, "graph": None, "waiting_on": 0, "since": time.time(),
        }
        token = secrets.token_hex(16)
        self.tokens[token] = cid
        self.client_token[cid] = token
        self._send_raw(ident, protocol.Welcome(cid, self.cluster_id, self.info(), token).encode())

    def _hello_worker(self, ident: bytes, msg: list) -> None:
        info = msg[1]
        self._replace_predecessor(info)
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

    def _scatter(self, cid: int, msg: protocol.Scatter) -> None:
        keys, frames = msg.keys, msg.frames
        inline = []
        spans = {}
        pos = 0
        for key, descs in zip(keys, msg.descs):
            if descs is None:  # one small frame: the scheduler keeps it
                inline.append(frames[pos])
                pos += 1
                continue
            n = sum(1 for d in descs if d[0] != protocol.SHM)  # shared-memory descriptors carry no frame
            inline.append(None)
            spans[key] = (descs, frames[pos:pos + n])
            pos += n
        per_worker: dict[int, list[int]] = {}
        for tid, w in self.state.scatter(cid, keys, inline, msg.workers):
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
        self.tokens.pop(self.client_token.pop(cid, ""), None)
        self.last_seen.pop(ident, None)
        self.state.remove_client(cid)
        ci = self.client_info.get(cid)
        if ci is not None:
            ci.update(connected=False, activity="idle", detail="disconnected", waiting_on=0, since=time.time())
            gone = [c for c, v in self.client_info.items() if not v["connected"]]
            for c in gone[:max(0, len(gone) - CLIENTS_KEPT)]:
                del self.client_info[c]

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
            self.history.worker_gone(wi.name, time.time())

    def _replace_predecessor(self, info: dict) -> None:
        """A worker its host's nanny restarted says hello under the old name before the old
        one's heartbeat timed out (another host's processes have no pidfd here): the old one,
        same name, same other host, another pid, is dead. On this host the pidfd says it."""
        workers = self.state.workers
        w = workers.by_name.get(str(info.get("name")))
        if w is None:
            return
        old = workers[w]
        if old.host not in (None, self.host) and old.host == info.get("host") and old.pid != info.get("pid"):
            self._remove_worker(w, f"restarted on {old.host} as pid {info.get('pid')}")

    def _worker_process_died(self, fd: int) -> None:
        w = self.pidfds.get(fd)
        if w is not None:
            self._remove_worker(w, "process exited")

    def _heartbeat(self, t: float) -> None:
        self._check_waiters(t)
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
                    self.client_info[ins.client]["tasks_done"] += len(ins.keys)
            elif kind is Running:
                ident = self.client_ident.get(ins.client)
                if ident is not None:
                    send(ident, [protocol.header(protocol.RUNNING, ins.keys)])
            elif kind is Erred:
                ident = self.client_ident.get(ins.client)
                if ident is not None:
                    send(ident, [protocol.header(protocol.ERRED, ins.keys, ins.tracebacks), pack(ins.excs)])
                    self.client_info[ins.client]["tasks_done"] += len(ins.keys)
            elif kind is Free:
                send(self.worker_ident[ins.worker], [protocol.header(protocol.FREE, ins.keys)])
            elif kind is Cancel:
                send(self.worker_ident[ins.worker], [protocol.header(protocol.CANCEL, ins.tids)])
            elif kind is ReleaseBlobs:
                if self.table is not None:
                    self.table.release(ins.blobs)
            else:
                raise TypeError(f"unknown instruction {ins!r}")

    # ----------------------------------------------------------- telemetry
    def _telemetry(self, ident: bytes, who, w: int, tele) -> None:
        """Keep a worker's telemetry payload; a malformed one is dropped (its heartbeat counts)."""
        try:
            payload.parse(tele)
        except payload.BadTelemetry as e:
            self.bad_telemetry(_peer(ident, who), protocol.HEARTBEAT, str(e))
            return
        wi = self.state.workers[w]
        self.history.ingest(wi.name, wi.address, tele, time.time())

    def _activity(self, cid: int, msg: protocol.Activity) -> None:
        ci = self.client_info.get(cid)
        if ci is None:
            return
        t = time.time()
        if ci["activity"] != msg.kind:
            ci["since"] = t
        ci["activity"] = msg.kind
        ci["detail"] = msg.detail
        if msg.kind == "building":
            ci["graph"] = {"built": msg.done, "uploaded": 0, "total": msg.total}
        elif msg.kind == "uploading":
            ci["graph"] = {"built": msg.total, "uploaded": msg.done, "total": msg.total}
        ci["waiting_on"] = max(0, msg.total - msg.done) if msg.kind == "waiting" else 0

    def client_activity(self, now: float) -> list[dict]:
        """The clients as the dashboard lists them (copies)."""
        out = []
        for ci in self.client_info.values():
            row = dict(ci)
            row["graph"] = dict(ci["graph"]) if ci["graph"] else None
            row["for_seconds"] = max(0.0, now - ci["since"])
            out.append(row)
        return out

    def _publish(self) -> None:
        """Once a second: the scheduler's own spans into the history, and a new snapshot
        for the dashboard (plain data; its HTTP threads read nothing live)."""
        if self.dashboard is None:
            return  # the history is for the dashboard alone
        t = time.time()
        counts = self.state.counts
        self.history.tick(t, counts["finished"], counts["erred"])
        if self.telemetry:
            self.history.ingest_local("scheduler", self.shipper.collect(), t)
        snap = build_snapshot(self, self.scanner, t)
        snap["started"] = self.started_at
        self.dashboard.publish(snap, self.info())

    # --------------------------------------------------------------- views
    def info_without_dashboard(self) -> dict:
        info = self.state.info()
        info["address"] = self.address
        info["cluster_id"] = self.cluster_id
        info["pid"] = os.getpid()
        info["dropped_messages"] = self.dropped.count
        info["internal_errors"] = self.errors.count
        info["dropped_telemetry"] = self.bad_telemetry.count
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

    from frisky.cli import args as cli

    parser = cli.Parser(prog="frisky scheduler", description="Run a Frisky scheduler.")
    parser.add_argument("--host", default=config.get("host"), help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=cli.port, default=config.get("scheduler_port"),
                        help="TCP port, 0 for any free one (default 8786)")
    parser.add_argument("--address", type=cli.address, default=None, help="full address to bind instead (tcp/ipc)")
    parser.add_argument("--dashboard-address", default=None,
                        help="[host]:port for the dashboard and its JSON API (default :8787; 'none' disables)")
    parser.add_argument("--cluster-id", default=None)
    parser.add_argument("--announce-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="do not print the address")
    parser.add_argument("--keys", default=None, help="directory of the cluster's keys (frisky keys new DIR)")
    parser.add_argument("--insecure", action="store_true",
                        help="listen on a non-loopback address without keys: anyone who reaches it runs code")
    args = parser.parse_args(argv)
    address = args.address or f"tcp://{args.host}:{args.port}"
    keys = None
    if args.keys:
        try:
            keys = curve.load(args.keys, serving=True)
        except ValueError as e:
            cli.fail(parser.prog, str(e))
    elif not args.insecure and curve.network_facing(address):
        cli.fail(parser.prog, f"{address} is reachable from other hosts and there are no keys: anyone who reaches "
                              "it could run code on the workers; give --keys DIR (frisky keys new DIR) or --insecure")
    try:
        sockets.check_address(address)
        dashboard = config.dashboard_address(args.dashboard_address if args.dashboard_address is not None
                                             else config.UNSET)
        server = SchedulerServer(address, cluster_id=args.cluster_id, dashboard_address=dashboard, keys=keys)
    except (ValueError, OSError, zmq.ZMQError) as e:  # a bad host, a port in use: one line, status 2
        cli.fail(parser.prog, f"cannot listen at {address}: {e}")
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
