"""Values between hosts sealed with AES-256-GCM on the workers' bulk sockets, on loopback
with real keyed processes: they arrive intact over the bulk connection, a flipped bit is
refused (one log line) and the value fetched again, and strangers at a bulk port get nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import cloudpickle
import numpy as np
import psutil
import pytest
import zmq

import frisky
from frisky import protocol
from frisky.zmq import curve

pytestmark = pytest.mark.skipif(not curve.available(), reason="libzmq without CURVE")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers started by hand cannot import us

# A worker that flips one bit of the first sealed part of each frame whose size is named on
# its command line, once per size: a bit flipped on the wire, as the receiver sees it.
TAMPER = """
import sys
from frisky.data import seal
where, sizes = sys.argv[1], {int(s) for s in sys.argv[2].split(',')}
orig = seal.Sealer._part
def _part(self, flags, xfer, total, offset, data):
    out = orig(self, flags, xfer, total, offset, data)
    if total in sizes and offset == 0:
        sizes.discard(total)
        i = {'header': 40, 'ciphertext': seal.HEADER.size + 100, 'tag': len(out) - 1}[where]
        out[i] ^= 0x04
    return out
seal.Sealer._part = _part
from frisky.cli.main import main
main(sys.argv[3:])
"""

N = 1 << 20  # float64 elements: 8 MiB, several sealed parts


def make(seed: int, n: int = N):
    return np.random.default_rng(seed).random(n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A keyed scheduler and two bare workers on loopback: ``good`` and ``bad`` (which may tamper)."""

    def __init__(self, tmp_path, tamper: tuple[str, list[int]] | None = None) -> None:
        self.keys = str(tmp_path / "keys")
        curve.new(self.keys)
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.logs = {n: open(tmp_path / f"{n}.log", "w+") for n in ("sched", "good", "bad")}  # noqa: SIM115
        cmd = [sys.executable, "-m", "frisky.cli.main"]
        self.procs = [subprocess.Popen([*cmd, "scheduler", "--port", str(port), "--keys", self.keys],
                                       stdout=subprocess.DEVNULL, stderr=self.logs["sched"])]
        worker = ["worker", self.address, "--keys", self.keys, "--no-nanny", "--memory-limit", "2GiB"]
        self.procs.append(subprocess.Popen([*cmd, *worker, "--name", "good"], stdout=subprocess.DEVNULL,
                                           stderr=self.logs["good"]))
        bad = [*cmd] if tamper is None else [sys.executable, "-c", TAMPER, tamper[0], ",".join(map(str, tamper[1]))]
        self.procs.append(subprocess.Popen([*bad, *worker, "--name", "bad"], stdout=subprocess.DEVNULL,
                                           stderr=self.logs["bad"]))
        self.client = frisky.Client(self.address, keys=self.keys, timeout=30)
        self.client.wait_for_workers(2, timeout=60)
        self.workers = {w["name"]: (a, w["pid"]) for a, w in self.client.scheduler_info()["workers"].items()}

    def log(self, name: str) -> str:
        f = self.logs[name]
        f.flush()
        f.seek(0)
        return f.read()

    def close(self) -> None:
        self.client.close()
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self.logs.values():
            f.close()


@pytest.fixture
def cluster(tmp_path, request):
    c = Cluster(tmp_path, getattr(request, "param", None))
    yield c
    c.close()


def _bulk_port(pid: int, data_address: str) -> int:
    """The worker's other listening TCP port: its bulk socket."""
    data_port = int(data_address.rpartition(":")[2])
    ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    others = ports - {data_port}
    assert len(others) == 1, ports
    return others.pop()


def _connected_to(pid: int, port: int) -> bool:
    return any(c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
               for c in psutil.Process(pid).net_connections("tcp"))


def test_values_cross_intact_on_the_bulk_connection(cluster):
    c = cluster
    good, good_pid = c.workers["good"]
    bad, bad_pid = c.workers["bad"]
    x = c.client.submit(make, 1, workers=["bad"], pure=False)
    y = c.client.submit(lambda a: a[::-1].copy(), x, workers=["good"])
    assert np.array_equal(y.result(60)[::-1], make(1))  # bad -> good, then good -> this client
    assert np.array_equal(x.result(60), make(1))  # bad -> this client
    bulk_bad, bulk_good = _bulk_port(bad_pid, bad), _bulk_port(good_pid, good)
    assert _connected_to(good_pid, bulk_bad)  # the worker fetched over the sealed connection
    assert _connected_to(os.getpid(), bulk_bad) and _connected_to(os.getpid(), bulk_good)  # and so did we
    assert "refused" not in c.log("good") + c.log("bad")


FRAME = N * 8


@pytest.mark.parametrize("cluster", [("ciphertext", [FRAME]), ("header", [FRAME]), ("tag", [FRAME])],
                         ids=["ciphertext", "header", "tag"], indirect=True)
def test_a_flipped_bit_between_workers_is_refused_and_the_value_fetched_again(cluster):
    c = cluster
    good_pid = c.workers["good"][1]
    x = c.client.submit(make, 2, workers=["bad"], pure=False)
    y = c.client.submit(lambda a: float(a.sum()), x, workers=["good"])
    # the first answer is refused, x is recomputed, and the second answer opens
    assert y.result(60) == float(make(2).sum())
    log = c.log("good")
    refused = [line for line in log.splitlines() if "refused" in line]
    assert len(refused) == 1, log
    assert "authenticate" in refused[0] or "sequence" in refused[0], refused
    assert psutil.pid_exists(good_pid)
    assert {n: p for n, (_, p) in c.workers.items()} == {
        w["name"]: w["pid"] for w in c.client.scheduler_info()["workers"].values()}


@pytest.mark.parametrize("cluster", [("ciphertext", [FRAME + 8])], ids=["ciphertext"], indirect=True)
def test_a_flipped_bit_towards_a_client_is_refused_and_fetched_again(cluster, caplog):
    c = cluster
    x = c.client.submit(make, 3, N + 1, workers=["bad"], pure=False)
    with caplog.at_level("WARNING", logger="frisky.client"):
        assert np.array_equal(x.result(60), make(3, N + 1))
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "authenticate" in refused[0], refused


def test_strangers_at_a_bulk_port_get_nothing(cluster):
    c = cluster
    bad, bad_pid = c.workers["bad"]
    x = c.client.submit(make, 4, workers=["bad"], pure=False)
    x.result(60)
    port = _bulk_port(bad_pid, bad)
    for junk in (b"\x01\x00\x04\x00abc", os.urandom(4096)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(junk)
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.setsockopt(zmq.IDENTITY, os.urandom(16))
    s.connect(f"tcp://127.0.0.1:{port}")
    s.send(b"attach")
    s.send(os.urandom(100))
    s.send_multipart(protocol.Get(1, [x.key], False).encode())
    assert not s.poll(1000)
    s.close()
    # a keyless ZeroMQ peer at the data port cannot ask for a bulk answer either
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    d.connect(bad)
    d.send_multipart(protocol.Get(1, [x.key], False, False, [os.urandom(16), os.urandom(32)]).encode())
    assert not d.poll(1000)
    d.close()
    t0 = time.monotonic()
    y = c.client.submit(lambda a: float(a.sum()), x, workers=["good"])
    assert y.result(60) == float(make(4).sum())
    assert time.monotonic() - t0 < 60
    assert psutil.pid_exists(bad_pid)
