"""The scheduler's state gives its memory back once a large graph is released.

A fresh process (so its RSS is its own) submits 200,000 tasks to SchedulerState, has
simulated workers finish them and a client release each result on arrival, then
compares its RSS with the RSS before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_SCRIPT = """
import array, gc, json, sys
import psutil
sys.path.insert(0, sys.argv[2])
from bench_scheduler import CID, FID_NOOP, FN_BLOB, SimCluster, make_keys, make_payloads
n = int(sys.argv[1])
p = psutil.Process()
sim = SimCluster(2)
state = sim.state
gc.collect()
before = p.memory_info().rss
for i in range(0, n, 10_000):
    state.submit(CID, make_keys("noop", i, 10_000), 0, [FID_NOOP], [FN_BLOB], make_payloads(i, 10_000))
# the harness's own objects made at the peak (loop index, figures, counters) would each
# pin a 1 MiB interpreter arena and be counted against the state: keep none of them
del i
peak = array.array("q", [p.memory_info().rss])
sim.drain(n)
sim.n_computed = sim.n_results = 0
state.flush()
print(json.dumps({"before": before, "peak": peak[0], "after": p.memory_info().rss, "rows": len(state.tasks),
                  "given_back": state.trimmed}))
"""


@pytest.mark.timeout(300)
def test_state_memory_returns_after_many_tasks_are_released():
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
    env = dict(os.environ, FRISKY_VALIDATE="0")
    out = subprocess.run([sys.executable, "-c", _SCRIPT, "200000", bench], capture_output=True, text=True,
                         timeout=240, env=env)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 1 << 20
    figures = f"before {m['before'] / mib:.0f} MiB, peak {m['peak'] / mib:.0f} MiB, after {m['after'] / mib:.0f} MiB"
    assert m["peak"] > m["before"] + 20 * mib, figures
    assert m["rows"] == 0 and m["given_back"] == 200_000, figures
    assert m["after"] <= 1.2 * m["before"], figures
