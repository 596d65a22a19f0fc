"""A launched cluster keeps strangers out: CURVE keys on every connection, two roles, and
nothing readable on the wire (captured with tcpdump on the fake hosts' bridge)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
from fakehosts import Launch, wait_clean

from frisky.data import seal
from frisky.deploy.launch.testhosts import FakeHosts, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@pytest.fixture(scope="module")
def fh():
    with FakeHosts(2) as hosts:
        yield hosts


@pytest.fixture
def clean(fh):
    yield fh
    ok, _, left = wait_clean(fh, 10)
    assert ok, f"left on the hosts: {left}"


def test_strangers_refused_while_a_good_client_is_served(clean):
    run = Launch(clean, "--workers-per-host", "1").wait_ready()
    try:
        code = (
            "import json, os, zmq, frisky\n"
            "from frisky import protocol\n"
            "from frisky.zmq import curve\n"
            "doc = json.load(open(os.environ['FRISKY_SCHEDULER']))\n"
            "addr = doc['scheduler']\n"
            "assert oct(os.stat(os.environ['FRISKY_SCHEDULER']).st_mode & 0o777) == '0o600'\n"
            "good = frisky.Client()\n"
            "pids = lambda: {a: w['pid'] for a, w in good.scheduler_info()['workers'].items()}\n"
            "workers = pids()\n"
            "for keys in (None, curve.generate()[1]):\n"  # no keys; another cluster's keys
            "    try:\n"
            "        frisky.Client(addr, keys=keys, timeout=3)\n"
            "    except TimeoutError as e:\n"
            "        assert 'keys' in str(e), e\n"
            "    else:\n"
            "        raise AssertionError('a client without the keys got in')\n"
            "# the client key may not register as a worker\n"
            "keys = curve.load(doc['keys'])\n"
            "ctx = zmq.Context.instance()\n"
            "s = ctx.socket(zmq.DEALER); s.linger = 0\n"
            "curve.client(s, keys); s.connect(addr)\n"
            "info = {'name': 'fake', 'address': 'tcp://198.18.0.1:1', 'nthreads': 1, 'memory_limit': 1 << 30,\n"
            "        'pid': os.getpid(), 'host': 'fake'}\n"
            "s.send_multipart([protocol.header(protocol.HELLO_WORKER, info)])\n"
            "assert not s.poll(2000), 'a client key registered as a worker'\n"
            "assert pids() == workers\n"
            "assert good.gather(good.map(lambda x: x + 1, range(50))) == list(range(1, 51))\n"
            "good.close()\n"
        )
        done = run.python(code)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert run.stop() == 0, run.output()


def test_garbage_and_keyless_peers_at_every_port_change_nothing(clean):
    run = Launch(clean, "--workers-per-host", "1").wait_ready()
    try:
        code = (
            "import json, os, socket, zmq, frisky\n"
            "from frisky import protocol\n"
            "good = frisky.Client()\n"
            "before = good.scheduler_info()['workers']\n"
            "doc = json.load(open(os.environ['FRISKY_SCHEDULER']))\n"
            "ports = [doc['scheduler'], *before]\n"
            "ctx = zmq.Context.instance()\n"
            "for addr in ports:\n"
            "    host, port = addr[len('tcp://'):].rsplit(':', 1)\n"
            "    for junk in (b'\\x01\\x00\\x04\\x00abc', os.urandom(4096), b'\\xff' + b'\\x00' * 8 + b'\\x7f'):\n"
            "        with socket.create_connection((host, int(port)), timeout=5) as raw:\n"
            "            raw.sendall(junk)\n"
            "    s = ctx.socket(zmq.DEALER); s.linger = 0; s.connect(addr)\n"  # a keyless ZeroMQ peer
            "    s.send_multipart([protocol.header(protocol.HELLO_CLIENT, 'x')])\n"
            "    s.send_multipart([protocol.header(protocol.GET, 1, ['k'], False)])\n"
            "    assert not s.poll(1000), addr\n"
            "    s.close()\n"
            "after = good.scheduler_info()['workers']\n"
            "assert {a: w['pid'] for a, w in after.items()} == {a: w['pid'] for a, w in before.items()}\n"
            "assert good.gather(good.map(lambda x: x * 3, range(40))) == [x * 3 for x in range(40)]\n"
            "good.close()\n"
        )
        done = run.python(code)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert run.stop() == 0, run.output()


TRANSFER = (
    "import numpy as np, frisky\n"
    "c = frisky.Client()\n"
    "by_host = {w['host']: a for a, w in c.scheduler_info()['workers'].items()}\n"
    "def make():\n"
    "    a = np.random.default_rng(7).integers(0, 256, 1 << 20, dtype='u1')\n"  # incompressible: sent as is
    "    for i in range(0, len(a) - 64, 4096):\n"
    "        a[i:i + 24] = np.frombuffer(b'FRISKY-PLAINTEXT-MARKER-', dtype='u1')\n"
    "    return a\n"
    "x = c.submit(make, workers=[by_host['h1']])\n"
    "y = c.submit(lambda a: a[::-1].copy(), x, workers=[by_host['h2']])\n"
    "assert bytes(y.result(60)[::-1][:24]) == b'FRISKY-PLAINTEXT-MARKER-'\n"
    "c.close()\n"
)


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
@pytest.mark.parametrize("secure", [True, False], ids=["keys", "insecure"])
def test_capture_on_the_bridge_holds_no_plaintext(clean, secure):
    pcap = os.path.join(clean.dir, f"capture-{secure}.pcap")
    dump = subprocess.Popen(["ip", "netns", "exec", clean.bridge_ns, "tcpdump", "-i", "br0", "-U", "-s", "0",
                             "-w", pcap, "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = dump.stderr.readline()  # "listening on br0 ...": capturing from here on
        assert "listening" in line, line
        run = Launch(clean, "--workers-per-host", "1", *([] if secure else ["--insecure"]),
                     command=[sys.executable, "-c", TRANSFER])
        assert run.wait(60) == 0, run.output()
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    with open(pcap, "rb") as f:
        data = f.read()
    assert len(data) > 1_000_000  # the array crossed the bridge
    marker = b"FRISKY-PLAINTEXT-MARKER-"
    if secure:
        assert marker not in data and b"numpy" not in data
        # the array crossed as AES-GCM sealed parts (each starts with the seal's magic)
        assert data.count(seal.MAGIC) >= 2, data.count(seal.MAGIC)
    else:  # the same capture without keys shows the test can see plaintext
        assert marker in data
        assert seal.MAGIC not in data
