"""`frisky scheduler` and `frisky worker` as separate processes on 127.0.0.1 TCP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLIENT = """
import sys, cloudpickle, frisky
import test_malloc_tuning
from test_malloc_tuning import CHUNK, malloc_is_mmapped
cloudpickle.register_pickle_by_value(test_malloc_tuning)  # the workers cannot import it
def square(x):
    return x * x
with frisky.Client(sys.argv[1], timeout=20) as c:
    c.wait_for_workers(2, timeout=30)
    info = c.scheduler_info()
    assert all(a.startswith("tcp://127.0.0.1:") for a in info["workers"]), info["workers"]
    # a worker started by hand tunes malloc as forked ones do
    assert c.submit(malloc_is_mmapped, CHUNK, pure=False).result() is False
    print(sum(c.gather(c.map(square, range(100)))))
"""



def test_scheduler_and_workers_from_the_command_line(procs, tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched = subprocess.Popen([sys.executable, "-m", "frisky.cli.main", "scheduler", "--port", str(port)],
                             stdout=subprocess.PIPE, text=True)
    procs.append(sched)
    assert sched.stdout.readline().strip() == f"frisky scheduler at {address}"
    for name in ("a", "b"):
        procs.append(subprocess.Popen([sys.executable, "-m", "frisky.cli.main", "worker", address,
                                       "--name", name, "--nthreads", "1", "--memory-limit", "1GiB"]))
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    out = subprocess.run([sys.executable, str(script), address], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sum(x * x for x in range(100)))


def test_frisky_help_and_unknown_command():
    out = subprocess.run([sys.executable, "-m", "frisky.cli.main", "--help"], capture_output=True, text=True)
    assert "scheduler" in out.stdout and "worker" in out.stdout and "demo" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "frisky.cli.main", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_worker_without_scheduler_exits_with_a_clear_error():
    port = _free_port()
    out = subprocess.run([sys.executable, "-m", "frisky.cli.main", "worker", f"tcp://127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FRISKY_CONNECT_TIMEOUT": "0.5"})
    assert out.returncode == 1 and "no scheduler answered" in out.stderr


def test_demo_prints_its_dashboard_first_runs_a_mixed_workload_and_ends_with_its_overview():
    import glob
    import re
    import tempfile

    tmp = tempfile.gettempdir()  # this run's private temp dir (tests/conftest.py), inherited
    before = set(os.listdir(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "frisky.cli.main", "demo", "--duration", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    lines = stdout.splitlines()
    url = re.fullmatch(r"dashboard: (http://127\.0\.0\.1:\d+) .*", lines[0])
    assert url, lines[0]
    for words in ("map 5,000", "tree 2,047", "arrays", "held", "a failing task raised ValueError",
                  "succeeded on retry", "reread"):
        assert words in stdout, words
    overview = stdout[stdout.index(f"Frisky at {url[1]}"):stdout.index("(the cluster stops now")]
    assert overview.splitlines()[-1].startswith("→ frisky observe "), overview
    assert lines[-1].startswith("done in")
    assert "erred 1" in overview  # the failing task
    assert not re.search(r"spill +spilled 0 B", overview), overview  # a little spill happened
    assert max(len(line) for line in overview.splitlines()) <= 100
    # no leftovers: its processes are gone (checked after each test), and its files too
    assert not glob.glob(f"/dev/shm/frisky-{proc.pid:x}p*")
    assert not [n for n in set(os.listdir(tmp)) - before if n.startswith("frisky-")]


def test_dashboard_serves_cluster_state_as_json():
    import json
    import urllib.request

    import frisky

    port = _free_port()
    with frisky.LocalCluster(n_workers=1, dashboard_address=f":{port}") as c, c.get_client() as cl:
        assert cl.submit(pow, 2, 5).result(timeout=20) == 32
        info = cl.scheduler_info()
        assert info["dashboard"] == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(info["dashboard"] + "/json/info", timeout=10) as r:
            data = json.loads(r.read())
        assert data["cluster_id"] == c.cluster_id


def _frisky(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frisky.cli.main", *argv], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("argv, says", [
    (["scheduler", "--port", "80000"], "outside 0-65535"),
    (["scheduler", "--port", "-1"], "outside 0-65535"),
    (["scheduler", "--address", "tcp://nohost"], "tcp://host:port"),
    (["scheduler", "--host", "999.1.1.1", "--port", "0"], "cannot listen"),
    (["worker", "nowhere"], "not a scheduler address"),
    (["worker", "tcp://127.0.0.1:1", "--memory-limit", "lots"], "lots"),
    (["worker", "tcp://127.0.0.1:1", "--memory-limit", "10"], "below the minimum"),
    (["worker", "tcp://127.0.0.1:1", "--memory-limit", "1.5"], "fraction"),
    (["worker", "tcp://127.0.0.1:1", "--nthreads", "0"], "at least 1"),
    (["worker", "tcp://127.0.0.1:1", "--listen-address", "tcp://127.0.0.1:99999"], "0-65535"),
    (["demo", "--workers", "0"], "at least 1"),
    (["demo", "--duration", "soon"], "not a number of seconds"),
    (["demo", "--duration", "-1"], "between 0 and 86400"),
    (["nope"], "unknown command"),
])
def test_argument_errors_are_one_line_and_status_2(argv, says):
    out = _frisky(*argv)
    assert out.returncode == 2, out
    assert says in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_a_port_in_use_is_one_line_and_status_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        for argv in (["scheduler", "--port", str(port)],
                     ["worker", "tcp://127.0.0.1:1", "--listen-address", f"tcp://127.0.0.1:{port}"]):
            out = _frisky(*argv)
            assert out.returncode == 2, out
            assert "Address already in use" in out.stderr
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_version_and_help_list_each_command_on_one_line():
    import frisky

    out = _frisky("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"frisky {frisky.__version__}"
    lines = _frisky("--help").stdout.splitlines()
    for cmd in ("scheduler", "worker", "demo"):
        assert len([line for line in lines if line.strip().startswith(cmd + " ")]) == 1, lines
