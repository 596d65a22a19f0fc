#!/usr/bin/env python
"""Many-machines figures on fake hosts (root only; see frisky/deploy/launch/testhosts.py).

Rows (medians of ``--repeat`` runs, one run of this script):

- ``launch``: ``frisky-launch --hosts h1,h2,h3 --workers-per-host 2`` until every worker
  is registered (the launcher prints the connection file line), secure (the default).
- ``teardown``: SIGINT to that launcher until nothing is left on any host (processes,
  /dev/shm, /tmp).
- ``no-op map``: ``client.map`` of N no-op calls over the 6 workers, secure and ``--insecure``.
- ``256 MiB h1 -> h2``: random float64 made on h1, consumed on h2 (submit to result), secure
  (requests over CURVE, the value sealed with AES-256-GCM) and ``--insecure``; dask.distributed
  between the same hosts with TLS (``Security.temporary()``) and plain TCP.
- ``bare 256 MiB h1 -> h2``: two bare pyzmq processes moving the same bytes in 4 MiB frames
  into one buffer: plain, CURVE (the speed a CURVE-only cluster is bound by), and sealed with
  :mod:`frisky.data.seal` (the bulk path's own ceiling).

Usage: ``python scripts/bench_launch.py [--quick] [--json] [--no-dask]``. Rows for compare_peers.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time

import frisky
from frisky.deploy.launch.testhosts import FakeHosts, unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(frisky.__file__)))


def start(fh: FakeHosts, *args: str) -> tuple[subprocess.Popen, float, str]:
    conn = os.path.join(fh.dir, f"c{time.monotonic_ns()}.json")
    argv = [sys.executable, "-m", "frisky.deploy.launch.launcher", "--hosts", ",".join(fh.names), "--ssh", fh.ssh,
            "--env", f"PYTHONPATH={ROOT}", "--connection-file", conn, "--workers-per-host", "2", *args]
    t0 = time.monotonic()
    proc = subprocess.Popen(fh.head(argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    for line in proc.stdout:
        if line.startswith("connection file"):
            return proc, time.monotonic() - t0, conn
    raise RuntimeError("the launcher did not come up")


def stop(fh: FakeHosts, proc: subprocess.Popen) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    while any(fh.pids(h) or fh.leftovers(h) for h in fh.hosts):
        time.sleep(0.01)
    return time.monotonic() - t0


def client_code(fh: FakeHosts, conn: str, code: str) -> dict:
    out = subprocess.run(fh.head([sys.executable, "-c", code]), capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=ROOT, FRISKY_SCHEDULER=conn), check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


NOOP = """
import json, time, frisky
c = frisky.Client()
c.gather(c.map(lambda x: x, range(1000)))
t0 = time.perf_counter()
c.gather(c.map(lambda x: x, range({n})))
print(json.dumps({{"s": time.perf_counter() - t0}}))
c.close()
"""

TRANSFER = """
import json, time, numpy as np, frisky
c = frisky.Client()
by_host = {{}}
for a, w in c.scheduler_info()['workers'].items():
    by_host.setdefault(w['host'], a)
out = []
for i in range({repeat}):
    x = c.submit(lambda i: np.random.default_rng(i).random(32 << 20), i, workers=[by_host['h1']])
    x.result()
    t0 = time.perf_counter()
    y = c.submit(lambda a: float(a[0] + a[-1]), x, workers=[by_host['h2']])
    y.result()
    out.append(time.perf_counter() - t0)
    del x, y
print(json.dumps({{"s": sorted(out)[len(out) // 2]}}))
c.close()
"""


DASK_TRANSFER = """
import json, time, numpy as np
from distributed import Client
from distributed.security import Security
sec = Security(tls_ca_file={d!r} + "/ca.pem", tls_client_cert={d!r} + "/cert.pem",
               tls_client_key={d!r} + "/key.pem", require_encryption=True) if {tls} else None
c = Client({addr!r}, security=sec, timeout=60)
c.wait_for_workers(2, timeout=60)
by_host = {{}}
for a, w in c.scheduler_info()['workers'].items():
    by_host[a.split('://')[1].rsplit(':', 1)[0]] = a
out = []
for i in range({repeat}):
    x = c.submit(lambda i: np.random.default_rng(i).random(32 << 20), i, workers=[by_host['198.18.0.11']], pure=False)
    x.result()
    t0 = time.perf_counter()
    y = c.submit(lambda a: float(a[0] + a[-1]), x, workers=[by_host['198.18.0.12']], pure=False)
    y.result()
    out.append(time.perf_counter() - t0)
    del x, y
print(json.dumps({{"s": sorted(out)[len(out) // 2]}}))
c.close()
"""


BARE_SERVER = """
import sys, zmq, numpy as np
from frisky.data import seal
mode, n, frame = sys.argv[1], 256 << 20, 4 << 20
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.linger = 0
pub = b"-"
if mode == "curve":
    pub, sec = zmq.curve_keypair()
    s.curve_server, s.curve_secretkey, s.curve_publickey = True, sec, pub
s.bind("tcp://198.18.0.11:8799")
print(pub.decode(), flush=True)
data = memoryview(np.random.default_rng(0).random(n // 8)).cast("B")
while True:
    ident, op = s.recv_multipart()
    if op == b"bye":
        break
    if mode == "sealed":
        for part in seal.Sealer(op).seal(1, [data]):
            s.send_multipart([ident, part], copy=False)
    else:
        for off in range(0, n, frame):
            s.send_multipart([ident, data[off:off + frame]], copy=False)
"""

BARE_CLIENT = """
import json, os, sys, time, zmq, numpy as np
from frisky.data import seal
mode, server_pub, repeat, n = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), 256 << 20
ctx = zmq.Context()
d = ctx.socket(zmq.DEALER)
d.linger = 0
if mode == "curve":
    pub, sec = zmq.curve_keypair()
    d.curve_serverkey, d.curve_publickey, d.curve_secretkey = server_pub, pub, sec
d.connect("tcp://198.18.0.11:8799")
out = np.empty(n, np.uint8)
times = []
for _ in range(repeat + 1):  # the first one warms the connection and the buffers
    t0 = time.perf_counter()
    if mode == "sealed":
        secret = os.urandom(32)
        d.send(secret)
        opener = seal.Opener(secret)
        while opener.feed(d.recv(copy=False).buffer) is None:
            pass
    else:
        d.send(b"go")
        got = 0
        while got < n:
            b = d.recv(copy=False).buffer
            out[got:got + len(b)] = np.frombuffer(b, np.uint8)
            got += len(b)
    times.append(time.perf_counter() - t0)
d.send(b"bye")
print(json.dumps({"s": sorted(times[1:])[len(times[1:]) // 2]}))
"""


def bare_transfer(fh: FakeHosts, mode: str, repeat: int) -> float:
    """Seconds for 256 MiB from h1 to h2 between two bare pyzmq processes (median)."""
    e = dict(os.environ, PYTHONPATH=ROOT)
    server = subprocess.Popen(fh.on_host("h1", [sys.executable, "-c", BARE_SERVER, mode]), stdout=subprocess.PIPE,
                              text=True, env=e)
    try:
        pub = server.stdout.readline().strip()
        out = subprocess.run(fh.on_host("h2", [sys.executable, "-c", BARE_CLIENT, mode, pub, str(repeat)]),
                             capture_output=True, text=True, timeout=600, env=e, check=False)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])["s"]
    finally:
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:  # the client failed before its bye
            server.kill()
            server.wait()


def dask_transfer(fh: FakeHosts, tls: bool, repeat: int) -> float:
    """dask.distributed: scheduler and a worker on h1, a worker on h2; seconds for 256 MiB h1 -> h2."""
    from distributed.security import Security

    sec = Security.temporary()
    for name, pem in (("ca.pem", sec.tls_ca_file), ("cert.pem", sec.tls_worker_cert), ("key.pem", sec.tls_worker_key)):
        with open(os.path.join(fh.dir, name), "w") as f:
            f.write(pem)
    tls_args = ["--tls-ca-file", f"{fh.dir}/ca.pem", "--tls-cert", f"{fh.dir}/cert.pem",
                "--tls-key", f"{fh.dir}/key.pem"] if tls else []
    proto = "tls" if tls else "tcp"
    addr = f"{proto}://198.18.0.11:8786"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen(fh.on_host("h1", [*dask, "--protocol", proto, "--host", "198.18.0.11", "--port", "8786",
                                                "--no-dashboard", *tls_args]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for h in fh.hosts[:2]:
            procs.append(subprocess.Popen(
                fh.on_host(h, [sys.executable, "-m", "distributed.cli.dask_worker", addr, "--host", h.address,
                               "--nthreads", "1", "--no-nanny", "--no-dashboard", "--memory-limit", "4GiB",
                               *tls_args]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        code = DASK_TRANSFER.format(d=fh.dir, tls=tls, addr=addr, repeat=repeat)
        out = subprocess.run(fh.head([sys.executable, "-c", code]), capture_output=True, text=True, timeout=600,
                             check=False)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])["s"]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:  # a dask worker slow to leave: it is done here
                p.kill()
                p.wait()


SSHCLUSTER = """
import json, time
from distributed import Client
from distributed.deploy.ssh import SSHCluster
t0 = time.perf_counter()
cluster = SSHCluster({hosts!r}, connect_options={{"known_hosts": {d!r} + "/known_hosts",
                     "client_keys": [{d!r} + "/client_key"], "username": "root"}},
                     worker_options={{"nthreads": 1, "n_workers": 2}},
                     scheduler_options={{"host": {hosts!r}[0], "port": 8786, "dashboard_address": ":8787"}}, remote_python={py!r})
c = Client(cluster)
c.wait_for_workers(6, timeout=120)
took = time.perf_counter() - t0
c.close()
cluster.close()
print(json.dumps({{"s": took}}))
"""


def sshcluster_launch(fh: FakeHosts) -> float:
    """dask.distributed's SSHCluster: scheduler on h1, 2 workers on each host, until registered."""
    hosts = [fh.hosts[0].address, *[h.address for h in fh.hosts]]
    code = SSHCLUSTER.format(hosts=hosts, d=fh.dir, py=sys.executable)
    out = subprocess.run(fh.head([sys.executable, "-c", code]), capture_output=True, text=True, timeout=300,
                         check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["s"]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    repeat = 2 if quick else 3
    n = 50_000 if quick else 200_000
    why = unavailable()
    if why:
        print(f"bench_launch: {why}", file=sys.stderr)
        return 2
    rows = []

    def add(row: tuple) -> None:
        rows.append(row)
        print(f"  {row[0]}: {row[1]:.3f} {row[2]}", file=sys.stderr, flush=True)  # progress

    with FakeHosts(3) as fh:
        launches, teardowns = [], []
        for _ in range(repeat):
            proc, took, _conn = start(fh)
            launches.append(took)
            teardowns.append(stop(fh, proc))
        add(("launch 3 hosts x 2 workers, until registered", statistics.median(launches), "s"))
        add(("teardown after Ctrl-C, until nothing is left", statistics.median(teardowns), "s"))
        if "--no-dask" not in argv:
            ssh = [sshcluster_launch(fh) for _ in range(repeat)]
            add(("launch 3 hosts x 2 workers, dask SSHCluster", statistics.median(ssh), "s"))
        for label, args in (("secure", []), ("insecure", ["--insecure"])):
            proc, _, conn = start(fh, *args)
            try:
                noop = client_code(fh, conn, NOOP.format(n=n))["s"]
                add((f"no-op map {n} over 6 workers, {label}", n / noop, "tasks/s"))
                s = client_code(fh, conn, TRANSFER.format(repeat=repeat))["s"]
                add((f"256 MiB random h1 -> h2, {label}", (256 << 20) / s / 1e9, "GB/s"))
            finally:
                stop(fh, proc)
        for mode in ("plain", "curve", "sealed"):
            s = bare_transfer(fh, mode, repeat)
            add((f"bare 256 MiB h1 -> h2, pyzmq {mode}", (256 << 20) / s / 1e9, "GB/s"))
        if "--no-dask" not in argv:
            for label, tls in (("TLS", True), ("plain TCP", False)):
                s = dask_transfer(fh, tls, repeat)
                add((f"256 MiB random h1 -> h2, dask {label}", (256 << 20) / s / 1e9, "GB/s"))
    if "--json" in argv:
        print(json.dumps([{"row": r, "value": v, "unit": u} for r, v, u in rows]))
    else:
        for r, v, u in rows:
            print(f"{r:<50} {v:>12.3f} {u}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
