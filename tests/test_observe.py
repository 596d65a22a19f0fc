"""`frisky observe` against real clusters: real workers, the real dashboard and API, the
CLI run as a subprocess. Renderer unit tests are in test_observe_render.py."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import jsonschema

import frisky
from frisky.observe import fetch

SCHEMA = json.loads((pathlib.Path(frisky.__file__).parent / "telemetry" / "api_v1.schema.json").read_text())


def observe(*argv: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "frisky.cli.main", "observe", *argv], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout  # not a terminal: no colour
    assert max(len(line) for line in out.stdout.splitlines()) <= 100, out.stdout
    if "--json" not in argv:
        assert out.stdout.rstrip().splitlines()[-1].startswith("→ frisky observe "), out.stdout
    return out


def wait_for(url: str, endpoint: str, ok, timeout: float = 30.0, **params) -> dict:
    """Poll the API until ``ok(reply)``; the reply (telemetry arrives with heartbeats)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = fetch.get(url, endpoint, params)
        if ok(reply) or time.monotonic() > deadline:
            return reply
        time.sleep(0.1)  # polling the HTTP API: it has no way to wait on a change


def inc(x: int) -> int:
    return x + 1


def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def slow_on(pid: int, x: int) -> int:
    """A task that takes 40 ms on the worker process ``pid`` and 2 ms elsewhere."""
    time.sleep(0.04 if os.getpid() == pid else 0.002)
    return x


def test_blocked_names_a_task_no_worker_can_run_and_one_running_long():
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            cluster.get_client() as client:
        url = cluster.dashboard_link
        restricted = client.submit(inc, 1, workers=["no-such-worker"], key="stranded-1")
        long = client.submit(sleepy, 120, key="sleeper-1")

        def both(reply):
            kinds = {r["kind"] for r in reply["reasons"]}
            return {"no-matching-worker", "long-running"} <= kinds

        assert both(wait_for(url, "blocked", both, timeout=45))
        text = observe("blocked", url).stdout
        stranded = text[text.index("no-matching-worker"):]
        assert "restricted to workers that do not exist" in stranded
        assert "stranded-1 · needs worker no-such-worker" in stranded
        running = text[text.index("long-running"):]
        assert re.search(r"sleeper-1 · on worker \d+ · for \d+(\.\d)? s", running), running
        assert "→ frisky observe" in text
        client.cancel([restricted, long])


def test_stragglers_ranks_the_worker_slowed_down_first():
    with frisky.LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=":0") as cluster, \
            cluster.get_client() as client:
        url = cluster.dashboard_link
        workers = client.scheduler_info()["workers"].values()
        slow = next(iter(sorted(workers, key=lambda w: str(w["name"]))))
        # every worker runs some: each task goes to one worker in turn
        names = sorted(str(w["name"]) for w in workers)
        futs = [client.submit(slow_on, slow["pid"], i, workers=[names[i % 3]], pure=False) for i in range(90)]
        client.gather(futs)

        def ranked(reply):
            rows = reply["workers"]
            return bool(rows) and rows[0]["worker"] == str(slow["name"]) and any(
                d["span"] == "worker.exec.call" for d in rows[0]["deviations"])

        reply = wait_for(url, "stragglers", ranked)
        assert ranked(reply), reply
        assert reply["workers"][0]["excess_seconds"] > 0
        text = observe("stragglers", url).stdout
        first = next(line for line in text.splitlines() if re.match(r" 1  ", line))
        assert first.split()[1] == str(slow["name"]) and "worker.exec.call" in first, text
        assert f"→ frisky observe timeline {url} --view detailed --worker {slow['name']}" in text


def test_overview_counts_equal_what_the_client_saw():
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            cluster.get_client() as client:
        url = cluster.dashboard_link
        ok = client.map(inc, range(200), pure=False)
        bad = client.map(boom, range(3), pure=False)
        frisky.wait(ok + bad)
        assert sum(client.gather(ok)) == sum(range(1, 201))
        erred = sum(1 for f in bad if f.exception() is not None)
        assert erred == 3
        seen = {"total_submitted": 203, "memory": 200, "erred": 3, "processing": 0, "waiting": 0, "queued": 0}

        def settled(reply):
            return all(reply["tasks"][k] == v for k, v in seen.items()) and reply["spans_total"] > 0

        reply = wait_for(url, "overview", settled)
        assert {k: reply["tasks"][k] for k in seen} == seen
        assert reply["workers"]["total"] == 2
        text = observe("overview", url).stdout
        assert "203 tasks submitted" in text
        assert "workers    2:" in text
        assert re.search(r"processing 0 · in memory 200 · erred 3 ", text), text
        assert "→ frisky observe blocked" in text  # erred tasks: the next command says why


def test_json_of_every_view_matches_the_schema_kept_in_the_repository():
    from frisky.observe.views import VIEWS

    with frisky.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            cluster.get_client() as client:
        url = cluster.dashboard_link
        assert sum(client.gather(client.map(inc, range(100)))) == sum(range(1, 101))
        wait_for(url, "overview", lambda r: r["spans_total"] > 0)
        extra = {"timeline": ["--view", "detailed", "--since", "30"], "spans": ["--name", "worker.exec.call",
                                                                              "--limit", "5"]}
        for view in VIEWS.values():
            out = observe(view.name, url, "--json", *extra.get(view.name, []))
            body = json.loads(out.stdout)
            jsonschema.validate(body, {"$ref": f"#/$defs/{view.endpoint}", "$defs": SCHEMA["$defs"]})
            if view.name == "spans":
                assert 0 < len(body["spans"]) <= 5 and {s["name"] for s in body["spans"]} == {"worker.exec.call"}
            text = observe(view.name, url, *extra.get(view.name, [])).stdout
            assert text.strip(), view.name


def test_the_sample_replies_of_the_renderer_tests_match_the_schema():
    import observe_samples as S

    for name, body in S.ALL.items():
        jsonschema.validate(body, {"$ref": f"#/$defs/{name}", "$defs": SCHEMA["$defs"]})
    jsonschema.validate(S.TIMELINE_DETAILED, {"$ref": "#/$defs/timeline", "$defs": SCHEMA["$defs"]})
