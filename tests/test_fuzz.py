"""Fuzz every port of a real cluster: the scheduler's and each worker's data socket.

Random frames, every named message (``test_protocol``'s strategies), mutations of those
messages, and raw TCP bytes are thrown at a LocalCluster of real processes over TCP.
After each batch a real client still gets right answers, every process is the one that
started (none died and was replaced), and their RSS grows by less than 50 MiB.

CI runs a bounded sample. ``FRISKY_FUZZ_EXAMPLES=10000`` runs the full bar: that many
random messages and that many mutations at the scheduler and at each worker.
"""

from __future__ import annotations

import math
import operator
import os
import socket
import time

import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol import FROM_CLIENT, GETS, mutated

import frisky
from frisky import protocol
from frisky.zmq import sockets

FULL = int(os.environ.get("FRISKY_FUZZ_EXAMPLES", "0"))
PER_TARGET = FULL or 150  # random messages, and again mutations, per port
BATCH = 50  # messages between two health checks
BUDGET = None if FULL else 10.0  # seconds per test in CI; the full bar runs to the end
RSS_GROWTH = 50 << 20

pytestmark = pytest.mark.timeout(3600 if FULL else 120)


def _settings(n_messages: int):
    return settings(max_examples=max(1, math.ceil(n_messages / BATCH)), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def _with_real_fids(msg):
    """A submit whose fids are its blobs' hashes: accepted, so the garbage reaches the workers."""
    if type(msg) is protocol.Submit:
        return msg._replace(fids=[protocol.function_id(b) for b in msg.fn_blobs])
    return msg


# messages from a (registered) client; hello-worker left out: a fake worker that never
# answers would hold tasks until its heartbeat timeout (who may join is authentication's)
CLIENT_MESSAGES = FROM_CLIENT.filter(lambda m: type(m) is not protocol.HelloWorker).map(_with_real_fids)
random_frames = st.lists(st.binary(max_size=64), min_size=1, max_size=4)


class Cluster:
    """The cluster under fuzz, with what 'healthy' means for it."""

    def __init__(self, c: frisky.LocalCluster, client: frisky.Client) -> None:
        self.c = c
        self.client = client
        self.ctx = zmq.Context.instance()
        workers = client.scheduler_info()["workers"]
        self.worker_addresses = list(workers)
        self.pids = [c._scheduler_proc.pid] + [w["pid"] for w in workers.values()]
        self.rss0 = None
        self.sent = 0
        self.started = time.monotonic()

    def rss(self) -> int:
        return sum(psutil.Process(pid).memory_info().rss for pid in self.pids)

    def check(self) -> None:
        """Right answers, the same processes, flat memory."""
        cl = self.client
        assert cl.gather(cl.map(operator.mul, range(30), range(30), pure=False)) == \
            [i * i for i in range(30)]
        big = cl.submit(bytes, 100_000, pure=False)  # held by a worker, fetched from its data socket
        assert big.result(timeout=60) == bytes(100_000)
        for pid in self.pids:
            assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE, pid
        info = cl.scheduler_info()
        assert sorted(w["pid"] for w in info["workers"].values()) == sorted(self.pids[1:])
        rss = self.rss()
        if self.rss0 is None:
            self.rss0 = rss
        assert rss - self.rss0 < RSS_GROWTH, f"RSS grew {(rss - self.rss0) >> 20} MiB"

    def out_of_time(self) -> bool:
        return BUDGET is not None and time.monotonic() - self.started > BUDGET

    def dealer(self, address: str) -> zmq.Socket:
        return sockets.dealer(self.ctx, address)

    def registered(self) -> zmq.Socket:
        """A socket the scheduler knows as a client (so client ops are applied, not refused)."""
        s = self.dealer(self.c.scheduler_address)
        s.send_multipart(protocol.HelloClient("fuzz").encode())
        assert s.poll(30000), "the scheduler did not welcome a client"
        s.recv_multipart()
        return s

    def send_all(self, s: zmq.Socket, batch: list) -> None:
        for frames in batch:
            s.send_multipart(frames)
        self.sent += len(batch)
        # the batch is applied before the check: the scheduler answers in order
        s.send_multipart(protocol.Info(1).encode())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if s.poll(1000) and protocol.unpack(s.recv_multipart()[0])[:2] == [protocol.REPLY, 1]:
                return
        raise AssertionError("the scheduler stopped answering")

    def send_to_worker(self, address: str, batch: list) -> None:
        s = self.dealer(address)
        try:
            for frames in batch:
                s.send_multipart(frames)
            self.sent += len(batch)
            s.send_multipart(protocol.Get(1 << 40, [], True).encode())  # answered after the batch
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert s.poll(60000), f"worker {address} stopped answering"
                head = protocol.unpack(s.recv_multipart()[0])
                if type(head) is list and head[:2] == [protocol.DATA, 1 << 40]:
                    return
            raise AssertionError(f"worker {address} stopped answering")
        finally:
            s.close(0)


@pytest.fixture(scope="module")
def fz():
    with frisky.LocalCluster(n_workers=2, transport="tcp") as c, c.get_client() as cl:
        f = Cluster(c, cl)
        for _ in range(10):  # warm up (receive buffers, telemetry rings, allocator): RSS is flat after
            f.check()
        f.rss0 = f.rss()
        yield f
        f.check()
        per = [psutil.Process(pid).memory_info().rss >> 20 for pid in f.pids]
        print(f"\nfuzz: {f.sent} messages sent; RSS growth {(f.rss() - f.rss0) / 2**20:.1f} MiB "
              f"(now {per} MiB: scheduler, workers); scheduler dropped "
              f"{cl.scheduler_info()['dropped_messages']}; processes up: {f.pids}")


@pytest.fixture(autouse=True)
def _clock(fz):
    fz.started = time.monotonic()  # each test has its own budget


def _run(fz: Cluster, send, batch) -> None:
    if fz.out_of_time():
        return
    send(batch)
    fz.check()


@_settings(PER_TARGET)
@given(batch=st.lists(random_frames, min_size=BATCH, max_size=BATCH))
def test_random_frames_at_the_scheduler(fz, batch):
    _at_scheduler(fz, batch)


@_settings(PER_TARGET)
@given(batch=st.lists(mutated(CLIENT_MESSAGES), min_size=BATCH, max_size=BATCH))
def test_mutations_at_the_scheduler(fz, batch):
    _at_scheduler(fz, batch)


@_settings(max(BATCH, PER_TARGET // 5))
@given(batch=st.lists(CLIENT_MESSAGES.map(lambda m: m.encode()), min_size=BATCH, max_size=BATCH))
def test_valid_messages_at_the_scheduler(fz, batch):
    """Well-formed but arbitrary: unknown keys, garbage payloads run (and fail) on workers."""
    _at_scheduler(fz, batch)


def _at_scheduler(fz: Cluster, batch: list) -> None:
    if fz.out_of_time():
        return
    s = fz.registered()
    try:
        _run(fz, lambda b: fz.send_all(s, b), batch)
        s.send_multipart(protocol.Bye().encode())
    finally:
        s.close(linger=100)


@_settings(PER_TARGET)
@given(batch=st.lists(random_frames, min_size=BATCH, max_size=BATCH))
def test_random_frames_at_each_worker(fz, batch):
    _run(fz, lambda b: _to_each_worker(fz, b), batch)


@_settings(PER_TARGET)
@given(batch=st.lists(mutated(GETS) | GETS.map(lambda m: m.encode()), min_size=BATCH, max_size=BATCH))
def test_mutations_at_each_worker(fz, batch):
    _run(fz, lambda b: _to_each_worker(fz, b), batch)


def _to_each_worker(fz: Cluster, batch: list) -> None:
    for address in fz.worker_addresses:
        fz.send_to_worker(address, batch)


@settings(max_examples=40 if not FULL else 400, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.lists(st.binary(min_size=1, max_size=256), min_size=1, max_size=4), port=st.integers(0, 2))
def test_raw_tcp_bytes(fz, data, port):
    """Anything a TCP peer can say before or instead of a ZMTP 3 handshake."""
    if fz.out_of_time():
        return
    address = [fz.c.scheduler_address, *fz.worker_addresses][port]
    host, p = address[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(p)), timeout=10) as raw:
        for chunk in [bytes([1, 0, 4, 0, 0x61, 0x62, 0x63]), *data]:
            try:
                raw.sendall(chunk)
            except OSError:  # the peer hung up on us: that is the point
                break
    fz.check()
