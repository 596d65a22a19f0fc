"""The observability API (``/api/v1``) of real clusters under real workloads: its numbers
equal what the client saw, every body fits the schema kept in the repo, the stream ticks,
bad queries get 400, and ``blocked`` names why tasks wait."""

from __future__ import annotations

import json
import pathlib
import threading
import time
import urllib.error
import urllib.request

import jsonschema
import numpy as np
import pytest
import zmq

import frisky
from frisky.telemetry import history

SCHEMA = json.loads((pathlib.Path(history.__file__).parent / "api_v1.schema.json").read_text())
ENDPOINTS = ["", "overview", "workers", "prefixes", "transfers", "clients", "blocked", "timeline",
             "timeline?view=detailed", "timeline?view=component&since=30", "spans", "spans?name=worker.exec.call&limit=5",
             "stragglers", "tasks", "tasks?since=30&limit=10"]


def inc(x):
    return x + 1


def boom(x):
    raise ValueError(f"boom {x}")


def big(n):
    return np.ones(n)


def total(a):
    return float(a.sum())


def nap(seconds):
    time.sleep(seconds)
    return seconds


def get(base: str, path: str, status: int = 200) -> dict:
    try:
        with urllib.request.urlopen(f"{base}/api/v1/{path}".rstrip("/"), timeout=20) as r:
            assert r.status == status
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.code == status, (path, e.code, e.read()[:300])
        return json.loads(e.read())


def check(name: str, body: dict) -> None:
    jsonschema.validate(body, {"$ref": f"#/$defs/{name}", "$defs": SCHEMA["$defs"]})


def until(fn, timeout: float = 30.0):
    """Poll ``fn`` (an API read) until it returns something true; the telemetry arrives with
    the next heartbeat and snapshot, about a second later."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, "condition not met in time"
        zmq.Poller().poll(100)  # a short wait without sleep: nothing registered


@pytest.fixture(scope="module")
def dash():
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as c:
        with c.get_client() as client:
            yield c, client


def test_links_name_the_dashboard(dash):
    cluster, client = dash
    assert cluster.dashboard_link and cluster.dashboard_link.startswith("http://127.0.0.1:")
    assert client.dashboard_link == cluster.dashboard_link
    assert client.scheduler_info()["dashboard"] == cluster.dashboard_link
    with urllib.request.urlopen(cluster.dashboard_link + "/", timeout=10) as r:
        assert b"<html" in r.read().lower() or r.headers["Content-Type"].startswith("text/html")


@pytest.mark.timeout(120)
def test_numbers_equal_what_the_client_saw_and_fit_the_schema():
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as c, c.get_client() as cl:
        base = c.dashboard_link
        futs = cl.map(inc, range(3000))
        assert cl.gather(futs) == list(range(1, 3001))
        bad = cl.map(boom, range(3))
        assert all(f.exception(timeout=30) is not None for f in bad)
        w0, w1 = sorted(({**w, "address": a} for a, w in cl.scheduler_info()["workers"].items()),
                        key=lambda w: w["name"])
        x = cl.submit(big, 2_000_000, workers=[w0["name"]])
        y = cl.submit(total, x, workers=[w1["name"]])
        assert y.result(timeout=30) == 2_000_000.0
        done = 3000 + 2  # the maps' successes, big and total

        def settled():
            p = {r["prefix"]: r for r in get(base, "prefixes")["prefixes"]}
            o = get(base, "overview")  # after: it has all the telemetry the prefixes have
            ok = (o["tasks"]["done"] == done and o["tasks"]["erred"] == 3 and p.get("inc", {}).get("done") == 3000
                  and p.get("boom", {}).get("errors") == 3 and get(base, "transfers")["totals"]["count"] >= 1)
            return ok and (o, p)

        o, p = until(settled)
        assert o["tasks"]["total_submitted"] == done + 3
        assert o["workers"]["total"] == 2 and o["spans_total"] > 3000
        assert p["inc"]["memory"] == 3000 and p["boom"]["erred"] == 3 and p["inc"]["compute_seconds"] > 0
        assert p["big"]["bytes"] >= 16_000_000
        assert sum(o["components"]["totals"].values()) > 0 and o["top_spans"]
        t = get(base, "transfers")
        slow = [s for s in t["slowest"] if s["key"] == x.key]
        assert slow and slow[0]["from"] == w0["address"] and slow[0]["to"] == w1["address"]
        assert slow[0]["bytes"] > 1_000_000
        workers = get(base, "workers")["workers"]
        assert {w["name"] for w in workers} == {w0["name"], w1["name"]}
        assert all(w["memory"]["limit"] > 0 and w["memory"]["rss"] > 0 for w in workers)
        # the array moved by reference in shared memory: no byte of it crossed a socket
        assert all(type(w["network"]["recv_bytes"]) is int and w["network"]["recv_bytes"] >= 0 for w in workers)
        assert sum(w["network"]["recv_bytes"] for w in workers) < 1_000_000
        clients = get(base, "clients")["clients"]
        me = [k for k in clients if k["connected"]]
        assert len(me) == 1 and me[0]["tasks_total"] == done + 3 and me[0]["tasks_done"] == done + 3
        spans = get(base, "spans?name=worker.exec.call&limit=7")
        assert len(spans["spans"]) == 7 and spans["stats"]["count"] >= 7
        assert all(s["name"] == "worker.exec.call" for s in spans["spans"])
        tasks = get(base, "tasks?since=120")["tasks"]
        assert {"memory", "erred"} <= {r["state"] for r in tasks}
        for path in ENDPOINTS:
            name = path.partition("?")[0] or "index"
            check(name, get(base, path))


def test_stream_delivers_ticks(dash):
    cluster, client = dash
    client.gather(client.map(inc, range(100)))
    with urllib.request.urlopen(cluster.dashboard_link + "/api/v1/stream", timeout=20) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        ticks = []
        t0 = time.monotonic()
        event = None
        while len(ticks) < 3:
            line = r.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event == "tick":
                ticks.append((time.monotonic(), json.loads(line[len("data: "):])))
        elapsed = time.monotonic() - t0
    assert elapsed < 10  # about a second apart
    for _, data in ticks:
        check("tick", data)
    assert ticks[-1][1]["overview"]["tasks"]["done"] >= 100


@pytest.mark.parametrize("path,status", [
    ("overview?since=abc", 400), ("overview?since=-5", 400), ("overview?since=nan", 400),
    ("timeline?view=bogus", 400), ("timeline?worker=nobody", 400), ("spans?limit=0", 400),
    ("spans?limit=1000000", 400), ("overview?sinse=5", 400), ("tasks?since=1&since=2", 400),
    ("nothing", 404), ("overview/more", 404),
])
def test_bad_requests_get_a_json_error(dash, path, status):
    body = get(dash[0].dashboard_link, path, status)
    check("error", body)
    assert body["error"]


def test_unknown_files_are_404_and_paths_cannot_escape(dash):
    base = dash[0].dashboard_link
    for path in ("/static/nothing.js", "/static/../server.py", "/static/%2e%2e/server.py", "/elsewhere"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + path, timeout=10)
        assert e.value.code == 404


def test_blocked_names_a_restriction_no_worker_matches_and_a_long_task(dash):
    cluster, client = dash
    base = cluster.dashboard_link
    stuck = client.submit(inc, 41, workers=["nobody-here"], pure=False)
    sleeper = client.submit(nap, 6, pure=False)

    def reasons():
        got = {r["kind"]: r for r in get(base, "blocked")["reasons"]}
        return "no-matching-worker" in got and "long-running" in got and got

    got = until(reasons, timeout=40)
    check("blocked", get(base, "blocked"))
    ex = got["no-matching-worker"]["examples"][0]
    assert ex["key"] == stuck.key and ex["restriction"] == ["nobody-here"]
    long = got["long-running"]["examples"][0]
    assert long["key"] == sleeper.key and long["age"] >= 3 and long["worker"] in {"0", "1"}
    client.cancel([stuck])
    assert sleeper.result(timeout=30) == 6


def test_a_waiting_client_is_shown_waiting(dash):
    cluster, client = dash
    base = cluster.dashboard_link
    f = client.submit(nap, 3, pure=False)
    result = []
    t = threading.Thread(target=lambda: result.append(client.gather([f])))
    t.start()
    try:
        me = until(lambda: [c for c in get(base, "clients")["clients"] if c["activity"] == "waiting"])
        assert me[0]["waiting_on"] == 1 and "gather" in me[0]["detail"]
    finally:
        t.join(30)
    assert result == [[3]]
    until(lambda: all(c["activity"] == "idle" for c in get(base, "clients")["clients"]))


def test_a_big_map_reports_its_upload(dash):
    cluster, client = dash
    n = 25_000
    futs = client.map(inc, range(n), pure=False)
    client.gather(futs)

    def uploaded():
        rows = [c for c in get(cluster.dashboard_link, "clients")["clients"] if c["graph"]]
        return rows and rows[0]["graph"]["total"] == n and rows[0]["graph"]["uploaded"] == n and rows

    until(uploaded)


def test_a_taken_port_falls_back_to_a_free_one(caplog):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        with caplog.at_level("WARNING", logger="frisky.dashboard"):
            with frisky.LocalCluster(n_workers=0, processes=False, dashboard_address=f":{port}") as c:
                assert c.dashboard_link and not c.dashboard_link.endswith(f":{port}")
                assert get(c.dashboard_link, "")["version"] == 1
        assert any("taken" in r.getMessage() for r in caplog.records)
    finally:
        s.close()


def test_none_disables_the_dashboard():
    with frisky.LocalCluster(n_workers=1, dashboard_address=None) as c, c.get_client() as cl:
        assert c.dashboard_link is None and cl.dashboard_link is None
