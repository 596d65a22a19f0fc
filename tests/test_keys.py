"""CURVE keys by hand (``frisky keys new``, ``--keys``, ``Client(keys=)``) on loopback, the
non-loopback refusal, and hostile host lists, connection files and key files."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import frisky
from frisky.deploy.launch import connection, hosts
from frisky.zmq import curve

pytestmark = pytest.mark.skipif(not curve.available(), reason="libzmq without CURVE")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _frisky(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "frisky.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_keys_new_files_are_private(tmp_path):
    d = tmp_path / "keys"
    done = subprocess.run([sys.executable, "-m", "frisky.cli.main", "keys", "new", str(d)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name in (curve.CLUSTER_FILE, curve.CLIENT_FILE):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600
    assert curve.load(str(d)).role == curve.CLIENT and not curve.load(str(d)).serves
    assert curve.load(str(d), serving=True).serves
    again = subprocess.run([sys.executable, "-m", "frisky.cli.main", "keys", "new", str(d)], capture_output=True,
                           text=True, check=False)
    assert again.returncode == 2 and "not overwriting" in again.stderr
    os.chmod(d / curve.CLIENT_FILE, 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        curve.load(str(d))


def test_scheduler_refuses_a_network_bind_without_keys():
    p = _frisky("scheduler", "--host", "0.0.0.0", "--port", "0")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "--insecure" in err and "keys" in err, err
    assert err.count("\n") == 1  # one line, no traceback
    ok = _frisky("scheduler", "--host", "0.0.0.0", "--port", "0", "--insecure")
    try:
        assert ok.stdout.readline().startswith("frisky scheduler at tcp://0.0.0.0:")
    finally:
        _stop(ok)


def test_keyed_scheduler_and_worker_serve_only_key_holders(tmp_path):
    d = str(tmp_path / "keys")
    curve.new(d)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched = _frisky("scheduler", "--port", str(port), "--keys", d)
    worker = None
    try:
        assert sched.stdout.readline().strip() == f"frisky scheduler at {address}"
        worker = _frisky("worker", address, "--keys", d, "--nworkers", "1", "--memory-limit", "1GiB")
        with frisky.Client(address, keys=d, timeout=20) as c:
            c.wait_for_workers(1, timeout=30)
            assert c.gather(c.map(lambda x: x + 1, range(20))) == list(range(1, 21))
            big = c.submit(lambda: bytes(1 << 20), pure=False)
            assert len(big.result(30)) == 1 << 20  # fetched from the worker's (keyed) data socket
        for keys in (None, curve.generate()[1]):
            with pytest.raises(TimeoutError, match="keys"):
                frisky.Client(address, keys=keys, timeout=2)
        conn = str(tmp_path / "frisky.json")
        connection.write(conn, address, keys=curve.load(d).to_json())
        assert stat.S_IMODE(os.stat(conn).st_mode) == 0o600
        with frisky.Client(conn, timeout=20) as c:
            assert c.submit(lambda: 7).result(30) == 7
    finally:
        _stop(*[p for p in (worker, sched) if p is not None])


def test_worker_refuses_client_keys(tmp_path):
    d = str(tmp_path / "keys")
    curve.new(d)
    os.remove(os.path.join(d, curve.CLUSTER_FILE))
    p = _frisky("worker", "tcp://127.0.0.1:1", "--keys", d)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "cluster.json" in err, err


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_hostfile_parser_never_crashes(text):
    try:
        specs = hosts.parse_hostfile(text)
    except ValueError:
        return
    assert specs and all(s.host for s in specs)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=8)))
def test_connection_and_key_files_fail_clearly(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("c") / "f.json"
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    os.chmod(path, 0o600)
    for load in (connection.load, curve.load):
        try:
            load(str(path))
        except ValueError:
            pass  # the clear error we want; anything else fails the test
