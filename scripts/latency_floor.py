#!/usr/bin/env python
"""How low one ``submit().result()`` round trip can go on this machine, measured in ONE run.

A Frisky round trip with worker processes crosses four process hops: client -> scheduler
-> worker -> scheduler -> client. This script times, side by side:

- ``socketpair``: a bare ping-pong between two processes (two hops, one thread wake-up
  each): the cost of waking a thread in another process, with no library at all;
- ``zmq chain``: the same four hops as Frisky, in bare pyzmq (DEALER -> ROUTER broker ->
  DEALER worker over ``ipc://``, no work, no serialization): the floor of the design's
  ZeroMQ topology, where each hop also wakes the two ZeroMQ I/O threads;
- ``frisky``: ``client.submit(inc, i, pure=False).result()`` on ``LocalCluster(n_workers=2)``.

With ``--awake`` every figure is taken again while one ``SCHED_IDLE`` spinner per core keeps
the CPUs from going idle (the kernel preempts such a spinner at once for any real work).
On a virtual machine whose guest halts idle vCPUs, the difference is what halting and
waking them costs each round trip. The spinners are a diagnostic, never something Frisky
does: they burn every core.

Expect spread between runs: a wake-up that stays on the waker's CPU is a context switch
(a few µs), one that lands on a halted vCPU costs tens of µs, and the kernel picks.

    python scripts/latency_floor.py [--samples 2000] [--awake] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

STOP = b"q"


def inc(x):
    return x + 1


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


# ---------------------------------------------------------------- socketpair ping-pong
def _echo_socket(sock: socket.socket) -> None:
    while True:
        m = sock.recv(16)
        if not m or m == STOP:
            return
        sock.send(m)


def socketpair_us(samples: int) -> float:
    a, b = socket.socketpair()
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_echo_socket, args=(b,))
    p.start()
    b.close()
    try:
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            a.send(b"x")
            a.recv(16)
            times.append(time.perf_counter() - t0)
        a.send(STOP)
    finally:
        p.join(10)
        a.close()
    return _median_us(times)


# ------------------------------------------------------------- bare pyzmq, four hops
def _broker(front: str, back: str) -> None:
    import zmq

    ctx = zmq.Context()
    f, b = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    f.bind(front)
    b.bind(back)
    poller = zmq.Poller()
    poller.register(f, zmq.POLLIN)
    poller.register(b, zmq.POLLIN)
    worker = b.recv_multipart()[0]  # its hello
    client = None
    while True:
        for s, _ in poller.poll():
            if s is f:
                client, m = f.recv_multipart()
                b.send_multipart([worker, m])
                if m == STOP:
                    return
            else:
                _, m = b.recv_multipart()
                f.send_multipart([client, m])


def _zmq_worker(back: str) -> None:
    import zmq

    s = zmq.Context().socket(zmq.DEALER)
    s.connect(back)
    s.send(b"hello")
    while True:
        m = s.recv()
        if m == STOP:
            return
        s.send(m)


def zmq_chain_us(samples: int) -> float:
    import zmq  # only after the spawned children exist would fork matter; spawn is safe

    with tempfile.TemporaryDirectory(prefix="latency-floor-") as d:
        front, back = f"ipc://{d}/front", f"ipc://{d}/back"
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_broker, args=(front, back)), ctx.Process(target=_zmq_worker, args=(back,))]
        for p in procs:
            p.start()
        zctx = zmq.Context()
        s = zctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 1000)
        s.connect(front)
        try:
            s.send(b"warm")  # the first message waits for the broker to know its worker
            s.recv()
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                s.send(b"x")
                s.recv()
                times.append(time.perf_counter() - t0)
            s.send(STOP)
        finally:
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join()
            s.close()
            zctx.term()
    return _median_us(times)


# ---------------------------------------------------------------------------- Frisky
def frisky_us(samples: int) -> float:
    import frisky

    with frisky.LocalCluster(n_workers=2) as cluster, frisky.Client(cluster) as client:
        for i in range(200):  # warm: functions known, fast path on the workers' loops
            client.submit(inc, i, pure=False).result()
        times = []
        for i in range(samples):
            t0 = time.perf_counter()
            client.submit(inc, i, pure=False).result()
            times.append(time.perf_counter() - t0)
    return _median_us(times)


# ---------------------------------------------------------------------------- spinners
def start_spinners() -> list[subprocess.Popen]:
    """One SCHED_IDLE busy loop per core: CPUs never idle, yet real work always preempts it."""
    code = "import os; os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]


def stop_spinners(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


ROWS = [
    ("socketpair", "2 processes, bare ping-pong (2 hops)", socketpair_us),
    ("zmq chain", "client -> broker -> worker -> broker -> client, bare pyzmq over ipc (4 hops)", zmq_chain_us),
    ("frisky", "client.submit(inc, i).result(), LocalCluster(n_workers=2) (4 hops)", frisky_us),
]


def measure(samples: int) -> dict[str, float]:
    return {name: fn(samples) for name, _, fn in ROWS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2000, help="round trips per row (default 2000)")
    ap.add_argument("--awake", action="store_true", help="also measure with SCHED_IDLE spinners on every core")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = ap.parse_args(argv)
    result = {"samples": args.samples, "cpus": os.cpu_count(), "idle": measure(args.samples)}
    if args.awake:
        spinners = start_spinners()
        try:
            result["awake"] = measure(args.samples)
        finally:
            stop_spinners(spinners)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    cols = ["idle CPUs"] + (["CPUs kept awake"] if args.awake else [])
    print(f"Round-trip medians, {args.samples} each, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
    print("| what | how | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, how, _ in ROWS:
        cells = [f"{result['idle'][name]:.0f} µs"]
        if args.awake:
            cells.append(f"{result['awake'][name]:.0f} µs")
        print(f"| {name} | {how} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
