"""SchedulerState directly: events in, instructions out; no sockets, no processes."""

from __future__ import annotations

import pytest

from frisky.scheduler.instructions import Compute, Erred, Free, Results
from frisky.scheduler.state import SchedulerState
from frisky.scheduler.workers import Refused

FID = b"f" * 16


def make(nworkers=2):
    s = SchedulerState()
    s.add_client(1)
    ws = [s.add_worker({"address": f"sim://w{i}", "name": str(i), "nthreads": 1}) for i in range(nworkers)]
    return s, ws


def computes(out):
    return [i for i in out if type(i) is Compute]


def erred(out):
    return [i for i in out if type(i) is Erred]


def test_independent_tasks_run_and_are_forgotten_on_release():
    s, _ = make()
    s.submit(1, ["a", "b", "c"], 0, [FID], [b"fn"], [b"1", b"2", b"3"])
    sent, results = [], []
    out = s.flush()
    while computes(out):
        for c in computes(out):
            sent.extend(c.keys)
            n = len(c.tids)
            s.finished(c.worker, c.tids, [1] * n, [b"r"] * n, [(FID, n, 1e-6 * n)])
        out = s.flush()
        results.extend(k for i in out if type(i) is Results for k in i.keys)
    assert sorted(sent) == ["a", "b", "c"]
    assert sorted(results) == ["a", "b", "c"]
    s.release(1, ["a", "b", "c"])
    assert not s.key_tid and s.functions == {}


def test_unknown_function_gets_one_task_per_thread_until_one_finishes():
    s, (w0, w1) = make()
    s.submit(1, [f"k{i}" for i in range(10)], 0, [FID], [b"fn"], [b"p"] * 10)
    first = computes(s.flush())
    assert sum(len(c.tids) for c in first) == 2, "one per thread: a long task keeps no queue behind it"
    assert not computes(s.flush())
    c = first[0]
    s.finished(c.worker, c.tids, [1], [b"r"], [(FID, 1, 1e-4)])
    assert sum(len(c.tids) for c in computes(s.flush())) >= 2, "a known short function fills the queues"


def test_dependencies_wait_then_run_where_the_data_is():
    s, (w0, w1) = make()
    s.submit(1, ["x"], 0, [FID], [b"fn"], [b"p"], workers=["sim://w1"])
    (c,) = computes(s.flush())
    assert c.worker == w1
    s.finished(w1, c.tids, [10_000_000], [None])  # large: held on w1
    s.submit(1, ["y"], 0, [FID], [b"fn"], [b"q"], deps=[["x"]])
    (c,) = computes(s.flush())
    assert c.worker == w1, "a dependent runs where its input is"
    s.release(1, ["x"])
    assert s.task_state("x") == "memory", "still needed by y"
    s.finished(w1, c.tids, [1], [b"r"])
    out = s.flush()
    assert Free(worker=w1, keys=["x"]) in out, "x is freed on its worker once y is done"


def test_erred_task_errs_its_dependents():
    s, _ = make()
    s.submit(1, ["x"], 0, [FID], [b"fn"], [b"p"])
    (c,) = computes(s.flush())
    s.submit(1, ["y"], 0, [FID], [b"fn"], [b"q"], deps=[["x"]])
    s.erred(c.worker, c.tids, [b"exc"], ["tb"])
    errs = erred(s.flush())
    assert sorted(k for e in errs for k in e.keys) == ["x", "y"]


def test_retries_rerun_then_succeed():
    s, _ = make()
    s.submit(1, ["x"], 0, [FID], [b"fn"], [b"p"], retries=1)
    (c,) = computes(s.flush())
    s.erred(c.worker, c.tids, [b"exc"], ["tb"])
    (c2,) = computes(s.flush())
    s.finished(c2.worker, c2.tids, [1], [b"ok"])
    assert [i for i in s.flush() if type(i) is Results]


def test_worker_death_reschedules_and_recomputes_lost_data():
    s, ws = make()
    s.submit(1, ["big"], 0, [FID], [b"fn"], [b"p"])
    (c,) = computes(s.flush())
    holder = c.worker
    s.finished(holder, c.tids, [10_000_000], [None])
    s.flush()
    s.submit(1, ["next"], 0, [FID], [b"fn"], [b"q"], deps=[["big"]])
    (c,) = computes(s.flush())
    assert c.worker == holder
    s.remove_worker(holder)
    (c,) = computes(s.flush())
    other = [w for w in ws if w != holder][0]
    assert c.worker == other and c.keys == ["big"], "lost data is recomputed first"
    s.finished(other, c.tids, [10_000_000], [None])
    (c,) = computes(s.flush())
    assert c.keys == ["next"] and c.worker == other


def test_killed_worker_after_three_deaths():
    s = SchedulerState()
    s.add_client(1)
    s.submit(1, ["bad"], 0, [FID], [b"fn"], [b"p"])
    for i in range(3):
        w = s.add_worker({"address": f"sim://w{i}", "name": str(i), "nthreads": 1})
        (c,) = computes(s.flush())
        assert c.worker == w
        s.remove_worker(w)
    errs = erred(s.flush())
    assert errs and errs[0].excs[0][0] == "killed"


def test_cancel_queued_only_cancels_what_no_worker_has():
    s, _ = make(1)
    s.submit(1, [f"k{i}" for i in range(10)], 0, [FID], [b"fn"], [b"p"] * 10)
    sent = [k for c in computes(s.flush()) for k in c.keys]
    cancelled = s.cancel_queued(1, [f"k{i}" for i in range(10)])
    assert sent and set(cancelled) == {f"k{i}" for i in range(10)} - set(sent)


def test_scattered_data_released_and_forgotten():
    s, _ = make()
    s.scatter(1, ["s"], [b"small"])
    assert s.where(["s"]) == [b"small"]
    s.release(1, ["s"])
    assert not s.key_tid


def test_submit_fills_every_column_for_new_and_reused_rows():
    s, (w0, w1) = make()
    fid2 = b"g" * 16
    for round_ in range(2):  # the first round makes new rows, the second reuses freed ones
        keys = [f"r{round_}-{i}" for i in range(4)]
        s.submit(1, keys, [0, 1, 0, 1], [FID, fid2], [b"fn", b"fn2"], [b"a", b"b", b"c", b"d"],
                 retries=[0, 1, 2, 3], priority=5, workers=["sim://w1"])
        t = s.tasks
        tids = [t.key_tid[k] for k in keys]
        assert [t.tretries[x] for x in tids] == [0, 1, 2, 3]
        assert [t.tprio[x] for x in tids] == [5] * 4
        assert [t.tfid[x] for x in tids] == [FID, fid2, FID, fid2]
        assert [t.tpayload[x] for x in tids] == [b"a", b"b", b"c", b"d"]
        assert all(t.trestrict[x] == ("sim://w1",) and t.twanted[x] == 1 for x in tids)
        out = s.flush()
        while computes(out):
            for c in computes(out):
                assert c.worker == w1, "restricted to w1"
                s.finished(c.worker, c.tids, [1] * len(c.tids), [b"r"] * len(c.tids))
            out = s.flush()
        s.release(1, keys)
        assert not s.key_tid and s.functions == {}


def test_restrictions_may_name_workers_and_follow_a_replacement_with_that_name():
    s, (w0, w1) = make()
    s.submit(1, ["x"], 0, [FID], [b"fn"], [b"p"], workers=["1"])
    (c,) = computes(s.flush())
    assert c.worker == w1, "restricted by name, as dask allows"
    s.remove_worker(w1)  # killed while running x: x waits for a worker named "1"
    assert not computes(s.flush())
    w2 = s.add_worker({"address": "sim://new-port", "name": "1", "nthreads": 1})
    (c,) = computes(s.flush())
    assert c.worker == w2, "its replacement has a new address but the same name"
    # an address still works, and a name that matches no worker waits
    s.submit(1, ["y"], 0, [FID], [b"fn"], [b"q"], workers=["sim://w0"])
    s.submit(1, ["z"], 0, [FID], [b"fn"], [b"r"], workers=["nobody"])
    assert [c.worker for c in computes(s.flush())] == [w0]


def test_a_worker_cannot_take_a_live_workers_address_or_name():
    s, (w0, w1) = make()
    with pytest.raises(Refused, match="held by live worker"):
        s.add_worker({"address": "sim://w0", "name": "impostor", "nthreads": 1})
    with pytest.raises(Refused, match="name '1' is taken"):
        s.add_worker({"address": "sim://elsewhere", "name": "1", "nthreads": 1})
    assert [wi.address for wi in s.alive_workers()] == ["sim://w0", "sim://w1"], "nobody was evicted"
    s.remove_worker(w1)
    w2 = s.add_worker({"address": "sim://w1", "name": "1", "nthreads": 1})
    assert w2 != w1, "a dead worker's address and name are free again"


def test_only_the_worker_sent_a_task_may_report_it():
    s, (w0, w1) = make()
    s.submit(1, ["x"], 0, [FID], [b"fn"], [b"p"], workers=["sim://w0"])
    (c,) = computes(s.flush())
    assert c.worker == w0
    before = s.state_counts()
    s.finished(w1, c.tids, [1], [b"forged"])
    s.erred(w1, c.tids, [b"exc"], ["tb"])
    s.cancelled(w1, c.tids)
    s.missing(w1, c.tids[0], [])
    s.finished(w0, [-1, 10**6], [1, 1], [b"a", b"b"])  # ids that name no task
    assert s.state_counts() == before == {"processing": 1}
    assert not [i for i in s.flush() if type(i) is Results]
    assert s.counts["ignored_reports"] == 4
    s.finished(w0, c.tids, [1], [b"right"])
    (r,) = [i for i in s.flush() if type(i) is Results]
    assert r.blobs == [b"right"]


def test_recomputed_data_goes_ahead_of_the_backlog():
    s, (w0, w1) = make()
    timing = [(FID, 1, 1e-4)]
    s.submit(1, ["link"], 0, [FID], [b"fn"], [b"p"])
    (c,) = computes(s.flush())
    holder = c.worker
    s.finished(holder, c.tids, [10_000_000], [None], timing)  # held there
    s.submit(1, ["next"], 0, [FID], [b"fn"], [b"q"], deps=[["link"]])
    (c,) = computes(s.flush())
    assert c.worker == holder
    s.finished(holder, c.tids, [10_000_000], [None], timing)
    s.release(1, ["link"])  # only "next" is wanted; "link" stays as its recipe
    # a large independent backlog, more than one flush hands out
    s.submit(1, [f"b{i}" for i in range(5000)], 0, [FID], [b"fn"], [b"p"] * 5000)
    first = computes(s.flush())
    assert sum(len(c.tids) for c in first) < 5000
    for c in first:
        s.finished(c.worker, c.tids, [1] * len(c.tids), [b"r"] * len(c.tids), timing)
    s.remove_worker(holder)  # "next" and its input "link" are lost: recompute both
    sent = [k for c in computes(s.flush()) for k in c.keys]
    assert "link" in sent and sent.index("link") == 0, "the lost link runs before the backlog"


def test_same_host_references_go_only_to_same_host_readers_and_only_while_held():
    s = SchedulerState()
    s.add_client(1)
    a = s.add_worker({"address": "ipc:///tmp/a", "name": "a", "nthreads": 1})
    b = s.add_worker({"address": "ipc:///tmp/b", "name": "b", "nthreads": 1})
    r = s.add_worker({"address": "tcp://10.0.0.2:1", "name": "r", "nthreads": 1})
    s.submit(1, ["x"], 0, [FID], [b"fn"], [b"p"], workers=["a"])
    (c,) = computes(s.flush())
    s.finished(a, c.tids, [10_000_000], [None], None, {c.tids[0]: b"ref-x"})
    s.validate()
    s.submit(1, ["onb"], 0, [FID], [b"fn"], [b"q"], deps=[["x"]], workers=["b"])
    s.submit(1, ["onr"], 0, [FID], [b"fn"], [b"q"], deps=[["x"]], workers=["r"])
    by_worker = {c.worker: c for c in computes(s.flush())}
    assert by_worker[b].where == {"x": ["ipc:///tmp/a", 10_000_000, b"ref-x"]}
    assert by_worker[r].where == {"x": ["ipc:///tmp/a", 10_000_000]}, "a reference means nothing on another host"
    s.remove_worker(a)  # x is lost: its reference goes with it
    assert not s.tasks.trefs
    s.validate()


def test_references_from_a_worker_on_another_host_are_not_kept():
    s = SchedulerState()
    s.add_client(1)
    r = s.add_worker({"address": "tcp://10.0.0.2:1", "name": "r", "nthreads": 1})
    s.submit(1, ["x"], 0, [FID], [b"fn"], [b"p"])
    (c,) = computes(s.flush())
    s.finished(r, c.tids, [10_000_000], [None], None, {c.tids[0]: b"ref-x"})
    assert not s.tasks.trefs
    s.release(1, ["x"])
    s.validate()


def test_a_thief_takes_locality_work_queued_behind_a_restricted_backlog_and_never_restricted_work():
    s, (w0, w1) = make()
    s.submit(1, ["x"], 0, [FID], [b"fn"], [b"p"], workers=["0"])
    (c,) = computes(s.flush())
    s.finished(w0, c.tids, [10_000_000], [None], [(FID, 1, 1.0)])  # held on w0; the function takes 1 s
    s.submit(1, [f"r{i}" for i in range(40)], 0, [FID], [b"fn"], [b"p"] * 40, workers=["0"])
    sent = {w0: [], w1: []}
    for c in computes(s.flush()):
        sent[c.worker].extend(c.keys)
    assert not sent[w1] and s.workers[w0].ready, "w0 is full and the rest waits in its queue"
    for _ in range(3):  # dispatches find nothing to steal: the backlog is not scanned again
        assert not computes(s.flush())
    s.submit(1, [f"d{i}" for i in range(8)], 0, [FID], [b"fn"], [b"p"] * 8, deps=[["x"]] * 8)
    for c in computes(s.flush()):
        sent[c.worker].extend(c.keys)
    assert sent[w1] and all(k.startswith("d") for k in sent[w1]), sent[w1]
    s.validate()
