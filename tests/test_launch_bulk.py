"""Bulk values between fake hosts (network namespaces with sshd, see tests/fakehosts.py):
sealed values cross intact, and a host whose network drops mid-run is noticed within the
heartbeat timeout and what it held is recomputed elsewhere — nothing hangs. Root only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fakehosts import Launch, env, wait_clean

from frisky.deploy.launch.testhosts import FakeHosts, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))

HEARTBEAT_TIMEOUT = 4


@pytest.fixture(scope="module")
def fh():
    with FakeHosts(3) as hosts:
        yield hosts


@pytest.fixture
def clean(fh):
    yield fh
    ok, _, left = wait_clean(fh, 15)
    assert ok, f"left on the hosts: {left}"


INTACT = (
    "import numpy as np, frisky\n"
    "c = frisky.Client()\n"
    "by_host = {w['host']: a for a, w in c.scheduler_info()['workers'].items()}\n"
    "make = lambda s: np.random.default_rng(s).random(3 << 20)\n"  # 24 MiB: many sealed parts
    "x = c.submit(make, 5, workers=[by_host['h2']])\n"
    "y = c.submit(lambda a: a * 2, x, workers=[by_host['h3']])\n"
    "z = c.submit(lambda a: a + 1, y, workers=[by_host['h1']])\n"
    "want = make(5)\n"
    "assert np.array_equal(z.result(60), want * 2 + 1)\n"  # h2 -> h3 -> h1 -> this client
    "assert np.array_equal(x.result(60), want)\n"  # h2 -> this client
    "c.close()\n"
)


def test_values_cross_hosts_intact_when_sealed(clean):
    run = Launch(clean, "--workers-per-host", "1", command=[sys.executable, "-c", INTACT])
    assert run.wait(90) == 0, run.output()


# Makes values on the workers, says which non-scheduler host holds one, waits for "go"
# (the test cuts that host's network meanwhile), then has another host consume it.
CUT = """
import json, socket, sys, time, numpy as np, frisky
c = frisky.Client()
by_host = {w['host']: a for a, w in c.scheduler_info()['workers'].items()}
make = lambda i: (socket.gethostname(), np.random.default_rng(i).random(1 << 20))
xs = [c.submit(make, i, pure=False) for i in range(12)]
held = {}
for i, x in enumerate(xs):
    held.setdefault(x.result(60)[0], (i, x))
victim = 'h3' if 'h3' in held else 'h2'
other = ({'h2', 'h3'} - {victim}).pop()
i, x = held[victim]
print(json.dumps({"victim": victim}), flush=True)
sys.stdin.readline()
t0 = time.monotonic()
y = c.submit(lambda t: float(t[1].sum()), x, workers=[by_host[other]])
got = y.result(120)
print(json.dumps({"ok": got == float(np.random.default_rng(i).random(1 << 20).sum()),
                  "s": time.monotonic() - t0}), flush=True)
c.close()
"""


def test_a_host_cut_off_is_noticed_and_its_values_recomputed(clean):
    run = Launch(clean, "--workers-per-host", "1", "--env", f"FRISKY_HEARTBEAT_TIMEOUT={HEARTBEAT_TIMEOUT}")
    run.wait_ready()
    client = subprocess.Popen(clean.head([sys.executable, "-c", CUT]), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(env(), FRISKY_SCHEDULER=run.connection_file))
    victim = None
    try:
        line = client.stdout.readline()
        assert line, client.stderr.read()
        victim = clean.host(json.loads(line)["victim"])
        subprocess.run(["ip", "-n", victim.netns, "link", "set", "eth0", "down"], check=True)
        client.stdin.write("go\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=150)
        assert client.returncode == 0, out + err
        result = json.loads(out.strip().splitlines()[-1])
        print("cut off", victim.name, result)
        assert result["ok"], result
        # noticed within the heartbeat timeout, then recomputed: seconds, not a hang
        assert result["s"] < HEARTBEAT_TIMEOUT + 40, result
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if victim is not None:
            subprocess.run(["ip", "-n", victim.netns, "link", "set", "eth0", "up"], check=False)
        assert run.stop() == 0, run.output()
    # the cut-off host's processes went away on their own (no launcher heartbeat)
    ok, _, left = wait_clean(clean, 15)
    assert ok, left
