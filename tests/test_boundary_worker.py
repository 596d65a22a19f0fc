"""A worker's ports survive what a hostile or broken peer sends: garbage to its data
ROUTER, bad scatters through the scheduler, malformed messages from a 'scheduler'."""

from __future__ import annotations

import os
import socket

import pytest
import zmq

import frisky
from frisky import protocol
from frisky.worker.server import Worker
from frisky.zmq import sockets


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def big(n):
    return bytes(n)


@pytest.fixture(scope="module")
def tcp_cluster():
    with frisky.LocalCluster(n_workers=1, transport="tcp") as c, c.get_client() as cl:
        yield c, cl


GARBAGE = [
    [b"\x00\x01random"], [b""], [protocol.pack([])], [protocol.pack(["get"])],
    [protocol.header(protocol.GET, 1, [[1]], True)],  # unhashable keys
    [protocol.header(protocol.GET, 1, ["k"], "yes")], [protocol.header(protocol.DATA, 1, [], [], [])],
    [protocol.header(protocol.GET, -1, ["k"], True)], [b"\xc1", b"more"],
]


def test_data_router_survives_garbage(tcp_cluster):
    c, cl = tcp_cluster
    (address, info), = cl.scheduler_info()["workers"].items()
    x = cl.submit(big, 100_000, pure=False)  # held by the worker, fetched from its data socket
    assert len(x.result(timeout=30)) == 100_000
    s = sockets.dealer(zmq.Context.instance(), address)
    try:
        for frames in GARBAGE:
            s.send_multipart(frames)
        host, port = address[len("tcp://"):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw:  # a ZMTP 1.0 "peer"
            raw.sendall(bytes([0x01, 0x00, 0x04, 0x00, 0x61, 0x62, 0x63]))
            while raw.recv(100):
                pass
        # a good request after the garbage is answered: the loop is still serving
        s.send_multipart(protocol.Get(5, [x._wkey], False).encode())
        assert s.poll(10000)
        reply = protocol.parse_data(s.recv_multipart())
        assert reply.req == 5 and reply.keys == [x._wkey]
    finally:
        s.close(0)
    assert _alive(info["pid"])
    y = cl.submit(big, 200_000, pure=False)
    assert len(y.result(timeout=30)) == 200_000
    assert cl.submit(sum, [1, 2, 3]).result(timeout=30) == 6


@pytest.mark.parametrize("descs,frames", [
    ([[[protocol.RAW]]], [b"garbage, not a pickle"]),
    ([[[protocol.SHM, "frisky-nope-x", 10]]], []),
    ([[[protocol.SHM, "../../etc/passwd", 10]]], []),
    ([[[protocol.PACKED, 99, 10, 1]]], [b"x"]),
], ids=["pickle", "segment", "path", "codec"])
def test_bad_scatter_errs_that_key_only(tcp_cluster, descs, frames):
    c, cl = tcp_cluster
    (address, info), = cl.scheduler_info()["workers"].items()
    s = sockets.dealer(zmq.Context.instance(), c.scheduler_address)
    try:
        s.send_multipart(protocol.HelloClient("raw").encode())
        assert s.poll(10000)
        assert type(protocol.parse_to_client(s.recv_multipart())) is protocol.Welcome
        s.send_multipart(protocol.Scatter(["bad-scatter"], descs, None, frames).encode())
        while True:  # the key errs; nothing else happens to anyone
            assert s.poll(10000), "no answer for the scattered key"
            msg = protocol.parse_to_client(s.recv_multipart())
            if type(msg) is protocol.Erred:
                assert msg.keys == ["bad-scatter"]
                break
            assert type(msg) is protocol.Heartbeat
        s.send_multipart(protocol.Bye().encode())
    finally:
        s.close(linger=200)
    assert _alive(info["pid"])
    assert cl.submit(sum, [1, 2]).result(timeout=30) == 3


def test_worker_survives_malformed_scheduler_messages():
    ctx = zmq.Context()
    router, address = sockets.router(ctx, "tcp://127.0.0.1:0")
    w = Worker(address, name="wx", ctx=ctx, listen_address="tcp://127.0.0.1:0", heartbeat_interval=0.05).start()
    try:
        assert router.poll(10000)
        ident, hello = router.recv_multipart()
        assert type(protocol.parse_from_client([hello])) is protocol.HelloWorker
        router.send_multipart([ident, *protocol.Welcome(0, "0p000000", {}).encode()])
        assert w.started.wait(10) and w.error is None
        for frames in ([b""], [b"\xc1"], [protocol.pack(["compute"])], [protocol.header(protocol.FREE, [[1]])],
                       [protocol.header(protocol.COMPUTE, [1], ["k"], 0, [b"f"], None, {}), b"\xc1"]):
            router.send_multipart([ident, *frames])
        router.send_multipart([ident, *protocol.Store([7], ["k"], [[[protocol.RAW]]], [b"not a pickle"]).encode()])
        while True:  # the store fails that task alone, and says so
            assert router.poll(10000)
            msg = protocol.parse_from_worker(router.recv_multipart()[1:])
            if type(msg) is protocol.TaskErred:
                assert msg.tids == [7]
                break
        # a function blob that is not what its id names is refused, not run
        router.send_multipart([ident, *protocol.Compute([8], ["k8"], 0, [b"\0" * 16], None, {}, [b"args"],
                                                        [b"blob"], {}).encode()])
        while True:
            assert router.poll(10000)
            msg = protocol.parse_from_worker(router.recv_multipart()[1:])
            if type(msg) is protocol.TaskErred:
                assert msg.tids == [8] and "does not match its id" in msg.tracebacks[0]
                break
        assert w._thread.is_alive()
        assert w.dropped.count == 5
    finally:
        w.stop()
        router.close(0)
        ctx.term()
