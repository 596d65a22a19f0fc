"""The scheduler's port survives what a hostile or broken peer sends.

Each message here once killed the scheduler, hung it, or corrupted its state. Now each
is dropped with a counted, rate-limited log line, and a real client still gets right
answers. The scheduler runs in a thread here so the test can read its counters.
"""

from __future__ import annotations

import operator
import socket
import time

import pytest
import zmq

import frisky
from frisky import protocol
from frisky.scheduler.server import MAX_WAITERS_PER_PEER, SchedulerServer
from frisky.worker.server import Worker
from frisky.zmq import sockets, zap


@pytest.fixture
def sched():
    server = SchedulerServer("tcp://127.0.0.1:0", ctx=zmq.Context(), heartbeat_interval=0.05,
                             heartbeat_timeout=3).start()
    worker = Worker(server.address, name="w0", ctx=server.ctx, listen_address="tcp://127.0.0.1:0",
                    heartbeat_interval=0.05, heartbeat_timeout=5).start()
    assert worker.started.wait(10) and worker.error is None
    socks = []

    def connect():
        s = sockets.dealer(server.ctx, server.address)
        socks.append(s)
        return s

    server.connect = connect
    yield server
    for s in socks:
        s.close(0)
    worker.stop()
    server.stop()
    assert server._thread is not None and not server._thread.is_alive()
    server.ctx.term()


def _request(s, frames, timeout=10.0):
    s.send_multipart(frames)
    assert s.poll(int(timeout * 1000)), "no answer"
    return protocol.unpack(s.recv_multipart()[0])


def _healthy(server) -> None:
    """The loop runs, answers, and a real client computes right answers."""
    assert server._thread.is_alive()
    s = server.connect()
    info = _request(s, protocol.Info(7).encode())
    assert info[0] == protocol.REPLY and info[1] == 7
    with frisky.Client(server.address) as c:
        assert c.gather(c.map(operator.mul, range(20), range(20))) == [i * i for i in range(20)]


def _until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        zmq.Poller().poll(10)  # a short wait without sleep: nothing registered


def _hello_client(s):
    msg = _request(s, protocol.HelloClient("x").encode())
    assert msg[0] == protocol.WELCOME
    return msg


def _hello_worker(s, address="tcp://127.0.0.1:1"):
    s.send_multipart(protocol.HelloWorker({"address": address, "name": address, "nthreads": 1}).encode())
    assert s.poll(10000)
    assert protocol.unpack(s.recv_multipart()[0])[0] == protocol.WELCOME


def _submit(keys, payloads, fidx=0, fids=None, blobs=None, deps=None):
    blob = b"not a pickle"
    fids = [protocol.function_id(blob)] if fids is None else fids
    blobs = [blob] if blobs is None else blobs
    return [protocol.header(protocol.SUBMIT, keys, fidx, fids, deps, 0, 0, None, False, None),
            protocol.pack(payloads), *blobs]


def test_wait_workers_without_n_before_hello(sched):
    s = sched.connect()
    s.send_multipart([protocol.header(protocol.WAIT_WORKERS, 1, None, 0.01)])
    _until(lambda: sched.dropped.count == 1)
    _healthy(sched)


@pytest.mark.parametrize("frames", [
    _submit(["a", "b"], [b"x"]),  # fewer payloads than keys
    _submit(["a", "b"], [b"x", b"y"], fidx=[0]),  # fidx shorter than keys
    _submit(["a"], [b"x"], blobs=[]),  # the function frame is missing
    _submit([["a"]], [b"x"]),  # an unhashable key
    _submit(["a"], [b"x"], fids=[b"\0" * 16]),  # a function id that is not its blob's hash
    _submit(["a", "b"], [b"x", b"y"], deps=[["b"], None]),  # a dependency after its dependent
], ids=["payloads", "fidx", "no-function-frame", "unhashable", "forged-fid", "dep-order"])
def test_bad_submit_is_dropped_whole(sched, frames):
    s = sched.connect()
    _hello_client(s)
    s.send_multipart(frames)
    _until(lambda: sched.dropped.count == 1)
    assert sched.state.key_tid.get("a") is None  # nothing half-applied
    _healthy(sched)


def test_submit_missing_function_then_silent_disconnect(sched):
    s = sched.connect()
    _hello_client(s)
    s.send_multipart(_submit(["a"], [b"x"], blobs=[]))
    s.close(0)
    _until(lambda: len(sched.client_ident) == 0)  # removed at its heartbeat timeout
    assert sched.dropped.count == 1
    _healthy(sched)


def test_hello_worker_with_a_bad_address(sched):
    s = sched.connect()
    s.send_multipart([protocol.header(protocol.HELLO_WORKER, {"address": [1]})])
    _until(lambda: sched.dropped.count == 1)
    assert len(sched.state.alive_workers()) == 1
    _healthy(sched)


@pytest.mark.parametrize("frames", [
    [protocol.header(protocol.FINISHED, [0, 1], [8], []), protocol.pack([None, None])],  # columns differ
    [protocol.header(protocol.FINISHED, [-1], [8], []), protocol.pack([None])],  # a negative tid
    [protocol.header(protocol.FINISHED, [10**9], [8], []), protocol.pack([None])],  # an unknown tid
    [protocol.header(protocol.ERRED, [0], [[1]]), protocol.pack([b"e"])],  # a bad traceback
    [protocol.header(protocol.MISSING, 0, [[1]])],  # an unhashable key
], ids=["columns", "negative-tid", "unknown-tid", "erred", "missing"])
def test_bad_worker_report_is_dropped(sched, frames):
    s = sched.connect()
    _hello_worker(s)
    s.send_multipart(frames)
    _until(lambda: sched.dropped.count == 1)
    _healthy(sched)


def _telemetry(**change):
    t = time.time()
    good = {
        "v": 1, "time": t, "buckets": [[int(t), {"worker.exec.call": [1, 0.1, 8]}]], "prefixes": [], "spans": [],
        "spans_total": 1, "lost": 0,
        "memory": {k: 0 for k in ("managed", "unmanaged", "spilled", "in_transit", "recv_pool", "rss", "limit",
                                  "target_at", "spill_at", "pause_at", "terminate_at")} | {"paused": False},
        "network": {"recv_bytes": 0, "sent_bytes": 0}, "disk": {"read_bytes": 0, "written_bytes": 0},
        "executing": [], "transfers": [], "in_flight": [], "cpu_seconds": 0.0,
    }
    return {**good, **change}


@pytest.mark.parametrize("telemetry", [
    "not a map", [1, 2], _telemetry(v=99), _telemetry(time=-1.0),
    _telemetry(buckets=[[1, {"x": [1, "a lot", 0]}]]), _telemetry(buckets=[[i, {}] for i in range(10_000)]),
    _telemetry(spans=[["a", 1.0, 2.0, "p", 0]] * 5000), _telemetry(memory={"paused": "yes"}),
    _telemetry(executing=[["k" * 100_000, 1.0]]), _telemetry(transfers=[[None, None, None, None, None]]),
], ids=["str", "list", "version", "negative-time", "str-seconds", "10k-seconds", "5k-spans", "memory",
        "huge-key", "nulls"])
def test_hostile_telemetry_is_dropped_and_the_heartbeat_kept(sched, telemetry):
    s = sched.connect()
    _hello_worker(s)
    s.send_multipart([protocol.header(protocol.HEARTBEAT, {"rss": 1, "telemetry": telemetry})])
    _until(lambda: sched.bad_telemetry.count == 1)
    assert sched.dropped.count == 0  # the heartbeat itself was fine
    fake = [w for w in sched.state.alive_workers() if w.address == "tcp://127.0.0.1:1"]
    assert fake and fake[0].metrics == {"rss": 1}
    assert "tcp://127.0.0.1:1" not in sched.history.workers
    s.send_multipart([protocol.header(protocol.BYE)])
    _until(lambda: len(sched.state.alive_workers()) == 1)
    _healthy(sched)
    assert sched.bad_telemetry.count == 1  # the real worker's telemetry parses


def test_well_formed_telemetry_is_kept(sched):
    s = sched.connect()
    _hello_worker(s)
    s.send_multipart([protocol.header(protocol.HEARTBEAT, {"telemetry": _telemetry()})])
    _until(lambda: "tcp://127.0.0.1:1" in sched.history.workers)
    assert sched.bad_telemetry.count == 0
    s.send_multipart([protocol.header(protocol.BYE)])


def test_dropped_telemetry_logs_rate_limited(sched, caplog):
    s = sched.connect()
    _hello_worker(s)
    with caplog.at_level("WARNING", logger="frisky.scheduler"):
        for _ in range(200):
            s.send_multipart([protocol.header(protocol.HEARTBEAT, {"telemetry": _telemetry(v=2)})])
        _until(lambda: sched.bad_telemetry.count == 200)
    lines = [r for r in caplog.records if "telemetry payload" in r.getMessage()]
    assert 1 <= len(lines) <= 2 and "version" in lines[0].getMessage()
    s.send_multipart([protocol.header(protocol.BYE)])


def test_garbage_before_hello(sched):
    s = sched.connect()
    for frames in ([b""], [b"\xc1"], [protocol.pack([])], [protocol.pack(["get"])], [b"a", b"b", b"c"],
                   [protocol.header(protocol.SUBMIT)], [protocol.header(protocol.RELEASE, ["a"])]):
        s.send_multipart(frames)
    _until(lambda: sched.dropped.count == 7)
    _healthy(sched)


def test_dropped_messages_log_rate_limited(sched, caplog):
    s = sched.connect()
    with caplog.at_level("WARNING", logger="frisky.scheduler"):
        for _ in range(500):
            s.send_multipart([b"garbage"])
        _until(lambda: sched.dropped.count == 500)
    lines = [r for r in caplog.records if "dropped a message" in r.getMessage()]
    assert 1 <= len(lines) <= 2
    assert "unregistered peer" in lines[0].getMessage() and "not msgpack" in lines[0].getMessage()


def test_many_unsatisfiable_waiters_cost_little(sched):
    """16k wait-workers that can never be met: each check costs O(answered), not O(waiting)."""
    socks = [sched.connect() for _ in range(16384 // MAX_WAITERS_PER_PEER)]
    t0 = time.monotonic()
    for s in socks:
        for r in range(MAX_WAITERS_PER_PEER):
            s.send_multipart([protocol.header(protocol.WAIT_WORKERS, r, 1000, 3600)])
    _until(lambda: sched._n_waiting == 16384, timeout=30)
    _hello_worker(sched.connect(), "tcp://127.0.0.1:2")  # a join checks them all
    info = _request(sched.connect(), protocol.Info(1).encode())
    assert info[1] == 1
    elapsed = time.monotonic() - t0
    assert elapsed < 8, elapsed  # the quadratic scan took 11 s for this
    assert sched.dropped.count == 0


def test_wait_workers_answers_and_caps(sched):
    s = sched.connect()
    assert _request(s, protocol.WaitWorkers(1, 1, 5).encode())[2] is True
    s.send_multipart(protocol.WaitWorkers(2, 2, 0.2).encode())  # times out
    assert s.poll(5000) and protocol.unpack(s.recv_multipart()[0])[1:] == [2, False]
    s.send_multipart(protocol.WaitWorkers(3, 2, 30).encode())
    _hello_worker(sched.connect(), "tcp://127.0.0.1:3")  # the second worker meets it
    assert s.poll(5000) and protocol.unpack(s.recv_multipart()[0])[1:] == [3, True]
    for r in range(MAX_WAITERS_PER_PEER):
        s.send_multipart(protocol.WaitWorkers(100 + r, 50, 30).encode())
    assert _request(s, protocol.WaitWorkers(999, 50, 30).encode())[1:] == [999, False]  # over the cap
    assert sched.dropped.count == 1


def test_where_answers_only_the_clients_own_keys(sched):
    with frisky.Client(sched.address) as c:
        f = c.submit(operator.add, 1, 2)
        assert f.result() == 3
        anon = sched.connect()
        assert _request(anon, protocol.Where(1, [f.key]).encode())[2] == [None]
        assert _request(anon, protocol.Where(2, [f.key], "forged").encode())[2] == [None]
        mine = _request(anon, protocol.Where(3, [f.key], c._token).encode())[2]
        assert mine != [None]


def test_zmtp1_peer_never_reaches_python(sched):
    """Seven bytes of plain TCP passed for a ZMTP 1.0 peer and reached the loop as a message."""
    host, port = sched.address[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(bytes([0x01, 0x00, 0x04, 0x00, 0x61, 0x62, 0x63]))
        while raw.recv(100):  # libzmq sends its greeting, then closes on the old version
            pass
    _healthy(sched)
    assert sched.dropped.count == 0


def test_oversized_frame_is_refused_before_allocation(monkeypatch):
    monkeypatch.setenv("FRISKY_MAX_MESSAGE_SIZE", str(1 << 20))
    server = SchedulerServer("tcp://127.0.0.1:0", ctx=zmq.Context()).start()
    try:
        s = sockets.dealer(server.ctx, server.address)
        s.send_multipart([protocol.Info(1).encode()[0], b"x" * (2 << 20)])  # the connection is cut
        assert _request(s, protocol.Info(2).encode())[1] == 2  # the DEALER reconnects
        assert server.dropped.count == 0
        s.close(0)
    finally:
        server.stop()
        server.ctx.term()


def test_zap_policy_decides_who_connects():
    server = SchedulerServer("tcp://127.0.0.1:0", ctx=zmq.Context()).start()
    try:
        zap.set_policy(lambda domain, address, mechanism, creds: "not today")
        s = sockets.dealer(server.ctx, server.address)
        s.send_multipart(protocol.Info(1).encode())
        assert not s.poll(500)
        s.close(0)
        zap.set_policy(None)
        s = sockets.dealer(server.ctx, server.address)
        assert _request(s, protocol.Info(2).encode())[1] == 2
        s.close(0)
    finally:
        zap.set_policy(None)
        server.stop()
        server.ctx.term()
