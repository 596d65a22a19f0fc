"""frisky-launch on fake hosts: network namespaces with their own hostname, /dev/shm,
/tmp and a real sshd each (see tests/fakehosts.py). Needs root; skips elsewhere."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from fakehosts import Launch, nothing_left, wait_clean

from frisky.deploy.launch import hosts as hostspec
from frisky.deploy.launch.testhosts import FakeHosts, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@pytest.fixture(scope="module")
def fh():
    with FakeHosts(3) as hosts:
        yield hosts
    assert not [ns for ns in os.listdir("/run/netns") if ns.startswith(hosts.tag)], "namespaces left behind"


@pytest.fixture
def clean(fh):
    yield fh
    ok, _, left = wait_clean(fh, 10)
    assert ok, f"left on the hosts: {left}"


def test_map_gather_three_hosts(clean):
    script = (
        "import socket, sys, frisky\n"
        "c = frisky.Client()\n"  # FRISKY_SCHEDULER names the connection file
        "assert c.gather(c.map(lambda x: x * 2, range(100))) == [x * 2 for x in range(100)]\n"
        "info = c.scheduler_info()['workers']\n"
        "hosts = {w['host'] for w in info.values()}\n"
        "assert len(info) == 6 and hosts == {'h1', 'h2', 'h3'}, info\n"
        "ran = set(c.gather(c.map(lambda i: socket.gethostname(), range(60), pure=False)))\n"
        "assert ran == {'h1', 'h2', 'h3'}, ran\n"
        "c.close()\n"
    )
    run = Launch(clean, "--workers-per-host", "2", command=[sys.executable, "-c", script])
    assert run.wait(60) == 0, run.output()
    out = "\n".join(run.lines)
    for h in clean.hosts:
        assert f"{h.name} ({h.name}, {h.address}): 2 workers" in out
    assert "scheduler tcp://198.18.0.11:8786" in out


def test_chain_crosses_hosts_over_tcp_without_shared_memory(clean):
    run = Launch(clean, "--workers-per-host", "1").wait_ready()
    try:
        code = (
            "import os, socket, numpy as np, frisky\n"
            "c = frisky.Client()\n"
            "by_host = {w['host']: a for a, w in c.scheduler_info()['workers'].items()}\n"
            "def step(x, i):\n"
            "    shm = [n for n in os.listdir('/dev/shm') if n.startswith('frisky-')]\n"
            "    return x + i, socket.gethostname(), shm\n"
            "x = c.submit(lambda: (np.arange(1 << 18, dtype='f8'), socket.gethostname(), []), workers=[by_host['h1']])\n"
            "seen = []\n"
            "for i, h in enumerate(['h2', 'h3', 'h1', 'h2'], 1):\n"
            "    x = c.submit(lambda t, i: step(t[0], i), x, i, workers=[by_host[h]])\n"
            "    seen.append(c.submit(lambda t: t[1:], x, workers=[by_host[h]]).result(60))\n"
            "arr = x.result(60)[0]\n"
            "assert (arr == np.arange(1 << 18) + 10).all()\n"
            "assert [s[0] for s in seen] == ['h2', 'h3', 'h1', 'h2'], seen\n"
            "assert all(s[1] == [] for s in seen), seen\n"  # no segment on any host
            "c.close()\n"
        )
        done = run.python(code)
        assert done.returncode == 0, done.stdout + done.stderr
        for h in clean.hosts:  # nothing in any host's /dev/shm while the cluster runs
            assert not [f for f in clean.leftovers(h) if f.startswith("/dev/shm")]
    finally:
        assert run.stop() == 0, run.output()


def test_scatter(clean):
    run = Launch(clean, "--workers-per-host", "1").wait_ready()
    try:
        code = (
            "import numpy as np, frisky\n"
            "c = frisky.Client()\n"
            "data = np.random.default_rng(1).random(300_000)\n"
            "[d] = c.scatter([data])\n"
            "sums = c.gather([c.submit(lambda a, i: float(a.sum()) + i, d, i, pure=False) for i in range(12)])\n"
            "assert sums == [float(data.sum()) + i for i in range(12)], sums\n"
            "c.close()\n"
        )
        done = run.python(code)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert run.stop() == 0, run.output()


def test_kill_remote_worker_mid_run(clean):
    run = Launch(clean, "--workers-per-host", "2").wait_ready()
    try:
        code = (
            "import os, signal, time, socket, frisky\n"
            "c = frisky.Client()\n"
            "victim = [w for w in c.scheduler_info()['workers'].values() if w['host'] == 'h2'][0]\n"
            "def slow(x):\n"
            "    time.sleep(0.1)\n"
            "    return x * x\n"
            "fs = c.map(slow, range(80))\n"
            "first = fs[0].result(60)\n"
            "os.kill(victim['pid'], signal.SIGKILL)\n"  # one pid space: the worker on h2
            "assert c.gather(fs) == [x * x for x in range(80)]\n"
            "t0 = time.monotonic()\n"
            "while len(c.scheduler_info()['workers']) < 6 and time.monotonic() - t0 < 30:\n"
            "    time.sleep(0.1)\n"
            "info = c.scheduler_info()['workers']\n"
            "assert len(info) == 6 and victim['pid'] not in {w['pid'] for w in info.values()}, info\n"
            "c.close()\n"
        )
        done = run.python(code)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "(re)started" in run.wait_line("(re)started")
    finally:
        assert run.stop() == 0, run.output()


def test_sigint_leaves_nothing_on_any_host(clean):
    run = Launch(clean, "--workers-per-host", "2").wait_ready()
    assert all(clean.pids(h) for h in clean.hosts)
    t0 = time.monotonic()
    assert run.stop(signal.SIGINT) == 0, run.output()
    ok, took, left = wait_clean(clean, 5)
    assert ok, left
    assert time.monotonic() - t0 < 5, run.output()


def test_sigkill_launcher_remote_processes_exit(clean):
    run = Launch(clean, "--workers-per-host", "1").wait_ready()
    run.proc.send_signal(signal.SIGKILL)
    run.wait(10)
    ok, took, left = wait_clean(clean, 10)
    assert ok, f"left after 10 s: {left}"


def test_command_exit_status(clean):
    run = Launch(clean, "--workers-per-host", "1",
                 command=[sys.executable, "-c", "import os, sys; sys.exit(3 if os.environ['FRISKY_SCHEDULER'] else 0)"])
    assert run.wait(60) == 3, run.output()
    assert not os.path.exists(run.connection_file)  # removed with the cluster


def test_unreachable_host_named_with_ssh_error(clean):
    run = Launch(clean, "--workers-per-host", "1", hosts="h1,nosuchhost", command=["true"])
    assert run.wait(60) == 1
    text = run.output()
    assert "nosuchhost" in text and "Could not resolve hostname" in text, text
    assert not nothing_left(clean)["h1"]


def test_unreachable_host_allow_partial_and_wrong_python(clean):
    run = Launch(clean, "--workers-per-host", "1", "--allow-partial", hosts="h1,h2,198.18.0.99",
                 command=[sys.executable, "-c", "import frisky; c = frisky.Client(); "
                          "assert len(c.scheduler_info()['workers']) == 2; c.close()"])
    assert run.wait(60) == 0, run.output()
    assert "198.18.0.99: FAILED" in run.output() and "port 22" in run.output()
    bad = Launch(clean, "--python", "/nonexistent/python3", hosts="h2", command=["true"])
    assert bad.wait(60) == 1
    assert "/nonexistent/python3" in bad.output() and "No such file" in bad.output(), bad.output()


def test_hostfile_parsing():
    text = "# cluster\nh1\nalice@h2:2222 workers=3  # big one\n\n[::1]:22\n"
    specs = hostspec.parse_hostfile(text)
    assert [str(s) for s in specs] == ["h1", "alice@h2:2222", "::1:22"]
    assert specs[1].workers == 3 and specs[1].user == "alice" and specs[1].port == 2222
    for bad in ("h1 workers=0", "h1 cores=2", "a@b@c", "h1:99999"):
        with pytest.raises(ValueError):
            hostspec.parse_hostfile(bad)
