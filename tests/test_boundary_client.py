"""The client's I/O thread survives malformed messages: it fails only what they answer."""

from __future__ import annotations

import operator
import threading

import pytest
import zmq

import frisky
from frisky import protocol
from frisky.errors import FriskyError
from frisky.zmq import sockets


class FakeScheduler:
    """A bare ROUTER that speaks for the scheduler, so the test decides every byte the client gets."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock, self.address = sockets.router(self.ctx, "tcp://127.0.0.1:0")
        self.ident = None

    def recv(self):
        assert self.sock.poll(10000), "the client sent nothing"
        frames = self.sock.recv_multipart()
        self.ident = frames[0]
        return protocol.parse_from_client(frames[1:])

    def send(self, frames):
        self.sock.send_multipart([self.ident, *frames])

    def next_submit(self):
        while True:
            msg = self.recv()
            if type(msg) is protocol.Submit:
                return msg

    def close(self):
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def fake():
    s = FakeScheduler()
    yield s
    s.close()


def _connect(fake):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("c", frisky.Client(fake.address, timeout=10)))
    t.start()
    assert type(fake.recv()) is protocol.HelloClient
    fake.send(protocol.Welcome(1, "c0", {"workers": {}}, "tok").encode())
    t.join(10)
    return box["c"]


def test_malformed_messages_fail_only_what_they_answer(fake):
    c = _connect(fake)
    try:
        for frames in ([b""], [b"\xc1"], [protocol.pack([])], [protocol.pack(["nope", 1])],
                       [protocol.header(protocol.RESULTS, [[1]]), protocol.pack([b"x"])],
                       [protocol.header(protocol.RUNNING)], [protocol.header(protocol.REPLY, "x", 1)]):
            fake.send(frames)
        f = c.submit(operator.add, 1, 2)
        key = fake.next_submit().keys[0]
        fake.send([protocol.header(protocol.RESULTS, [key]), protocol.pack([12345])])  # a value of no type
        with pytest.raises(FriskyError, match="malformed results"):
            f.result(timeout=10)
        g = c.submit(operator.add, 2, 3)
        key = fake.next_submit().keys[0]
        fake.send(protocol.Results([key], [c.codec.dumps_value(5)]).encode())
        assert g.result(timeout=10) == 5
        assert c._thread.is_alive()
    finally:
        c.close()


def test_bad_pickle_in_results_fails_that_future(fake):
    c = _connect(fake)
    try:
        f = c.submit(operator.add, 1, 2)
        key = fake.next_submit().keys[0]
        fake.send(protocol.Results([key], [b"garbage, not a pickle"]).encode())
        with pytest.raises(Exception):  # noqa: B017 - whatever unpickling garbage raises
            f.result(timeout=10)
        assert c._thread.is_alive()
    finally:
        c.close()
