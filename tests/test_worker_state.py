"""WorkerState directly: events in, named instructions out; no sockets, no threads."""

from __future__ import annotations

import random

import pytest

from frisky.protocol import Cancelled, Finished, Missing, TaskErred
from frisky.worker.state import (
    FAST_BATCH,
    FAST_STREAK,
    Batch,
    Execute,
    Failed,
    Fetch,
    Keep,
    Ran,
    Release,
    Skip,
    Skipped,
    Task,
    Unskip,
    WorkerState,
    try_inline,
)
from frisky.worker.store import sizeof

F = b"f" * 16


def task(tid, deps=None, fid=F, inline=None):
    return Task(tid, f"k{tid}", fid, b"payload", deps, Batch(inline or {}, {}))


def nothing_here(key):
    return False


def of(kind, out):
    return [i for i in out if type(i) is kind]


def test_a_task_resent_with_a_new_holder_fetches_from_it_and_ignores_the_old_one():
    s = WorkerState()
    out = s.compute([task(1, ["x"])], {"x": ["tcp://a", 100]}, nothing_here)
    assert out == [Fetch("tcp://a", ["x"])]
    # the holder died: the scheduler cancels the task, recomputes x elsewhere, sends it again
    assert s.cancel([1]) == [Cancelled([1])]
    out = s.compute([task(1, ["x"])], {"x": ["tcp://b", 100]}, nothing_here)
    assert out == [Fetch("tcp://b", ["x"])], "asks the new holder, not the dead one"
    assert s.in_flight == 100, "the abandoned request no longer counts"
    s.validate()
    # a late answer from the old peer (or its replacement at that address) changes nothing
    assert s.got([], ["x"], "tcp://a") == []
    assert s.got(["x"], [], "tcp://a") == []
    out = s.got(["x"], [], "tcp://b")
    assert out[0] == Keep("x", 100)
    (ex,) = of(Execute, out)
    assert [t.tid for t in ex.tasks] == [1] and not of(Missing, out)
    assert s.fetched == {"x"} and s.in_flight == 0
    s.validate()


def test_the_same_holder_again_is_not_asked_twice():
    s = WorkerState()
    s.compute([task(1, ["x"])], {"x": ["tcp://a", 10]}, nothing_here)
    out = s.compute([task(2, ["x"])], {"x": ["tcp://a", 10]}, nothing_here)
    assert out == [] and s.in_flight == 10
    (ex,) = of(Execute, s.got(["x"], [], "tcp://a"))
    assert sorted(t.tid for t in ex.tasks) == [1, 2]
    s.validate()


def test_a_queued_fetch_moves_to_the_new_holder_without_leaking_its_bytes():
    s = WorkerState(cap=100)
    s.compute([task(1, ["big"])], {"big": ["tcp://a", 100]}, nothing_here)
    out = s.compute([task(2, ["x"])], {"x": ["tcp://a", 50]}, nothing_here)
    assert out == [] and s.queued == {"x": "tcp://a"}, "over the cap: waits its turn"
    s.compute([task(3, ["x"])], {"x": ["tcp://b", 50]}, nothing_here)
    assert s.queued == {"x": "tcp://b"} and s.in_flight == 100
    s.validate()
    out = s.got(["big"], [], "tcp://a")
    assert of(Fetch, out) == [Fetch("tcp://b", ["x"])] and s.in_flight == 50
    s.validate()


def test_many_inputs_from_one_peer_go_as_several_requests_in_flight_at_once():
    s = WorkerState(cap=100)
    deps = [f"x{i}" for i in range(12)]
    out = s.compute([task(1, deps)], {k: ["ipc://a", 10] for k in deps}, nothing_here)
    # 100 bytes may be in flight, at most a quarter of them in one request
    assert out == [Fetch("ipc://a", ["x0", "x1"]), Fetch("ipc://a", ["x2", "x3"]),
                   Fetch("ipc://a", ["x4", "x5"]), Fetch("ipc://a", ["x6", "x7"]),
                   Fetch("ipc://a", ["x8", "x9"])]
    assert list(s.queued) == ["x10", "x11"] and s.in_flight == 100
    s.validate()
    out = s.got(["x0"], [], "ipc://a")
    assert of(Fetch, out) == [Fetch("ipc://a", ["x10"])], "one answer lets one more go, in order"
    s.validate()


def test_queued_fetches_go_in_order_until_the_next_does_not_fit():
    s = WorkerState(cap=100)
    s.compute([task(1, ["big"])], {"big": ["tcp://a", 100]}, nothing_here)
    s.compute([task(2, ["y", "z", "w"])], {"y": ["tcp://a", 60], "z": ["tcp://b", 50], "w": ["tcp://b", 10]},
              nothing_here)
    assert list(s.queued) == ["y", "z", "w"]
    out = s.got(["big"], [], "tcp://a")
    # y goes; z does not fit after it, and w waits behind z (no pass over the whole queue)
    assert of(Fetch, out) == [Fetch("tcp://a", ["y"])] and list(s.queued) == ["z", "w"]
    s.validate()
    out = s.got(["y"], [], "tcp://a")
    assert of(Fetch, out) == [Fetch("tcp://b", ["z"]), Fetch("tcp://b", ["w"])] and not s.queued
    s.validate()


def test_fetched_inputs_are_released_when_the_last_task_reading_them_reports():
    s = WorkerState()
    s.compute([task(1, ["x"]), task(2, ["x"])], {"x": ["tcp://a", 10]}, nothing_here)
    (ex,) = of(Execute, s.got(["x"], [], "tcp://a"))
    t1, t2 = ex.tasks
    assert s.finished([], [Ran(t1, 8, b"r", 0.5)]) == [Finished([1], [8], [[F, 1, 0.5]], [b"r"])]
    assert s.fetched == {"x"}, "task 2 still reads x"
    out = s.finished([], [Failed(t2, b"exc", "Traceback")])
    assert out == [TaskErred([2], ["Traceback"], [b"exc"]), Release(["x"])]
    assert s.fetched == set() and s.fetched_bytes == 0 and s.threaded == 0
    s.validate()


def test_a_missing_input_reports_the_task_and_releases_what_it_held():
    s = WorkerState()
    s.compute([task(1, ["x", "y"])], {"x": ["tcp://a", 10], "y": ["tcp://b", 20]}, nothing_here)
    assert of(Keep, s.got(["x"], [], "tcp://a")) == [Keep("x", 10)]
    out = s.got([], ["y"], "tcp://b")
    assert out == [Missing(1, ["y"]), Release(["x"])]
    assert not s.waiting and not s.fetched and s.in_flight == 0
    s.validate()


def test_tiny_functions_run_on_the_loop_thread_only_after_a_streak_and_while_threads_idle():
    s = WorkerState()
    (ex,) = s.compute([task(1)], {}, nothing_here)
    assert ex.here is False and s.threaded == 1
    s.finished([], [Ran(ex.tasks[0], 1, b"", 1e-6)])
    for tid in range(2, FAST_STREAK + 1):  # one short of the streak so far
        (ex,) = s.compute([task(tid)], {}, nothing_here)
        assert not ex.here
        s.finished([], [Ran(ex.tasks[0], 1, b"", 1e-6)])
    (ex,) = s.compute([task(100)], {}, nothing_here)
    assert ex.here, "a streak of tiny calls: on the loop thread"
    assert s.threaded == 0
    (big,) = s.compute([task(200 + i) for i in range(FAST_BATCH + 1)], {}, nothing_here)
    assert not big.here, "too many at once for the loop thread"
    (ex2,) = s.compute([task(300)], {}, nothing_here)
    assert not ex2.here, "threads busy: the loop thread must not run beside them"
    s.finished([Ran(ex.tasks[0], 1, b"", 1e-6)],
               [Ran(t, 1, b"", 1e-6) for t in big.tasks] + [Failed(ex2.tasks[0], b"e", "tb")])
    assert s.threaded == 0
    (ex,) = s.compute([task(400)], {}, nothing_here)
    assert not ex.here, "a failure ends the streak"
    (slow,) = s.compute([task(500, fid=b"g" * 16)], {}, nothing_here)
    assert not slow.here, "streaks are per function"
    s.validate()


def test_a_streak_counts_the_calls_after_the_last_slow_or_failed_one_in_a_batch():
    s = WorkerState()
    (ex,) = s.compute([task(i) for i in range(1, 8)], {}, nothing_here)
    t = ex.tasks
    s.finished([], [Ran(t[0], 1, b"", 1e-6), Ran(t[1], 1, b"", 1.0), Ran(t[2], 1, b"", 1e-6),
                    Ran(t[3], 1, b"", 1e-6)])
    assert s.streak[F] == 2
    s.finished([], [Ran(t[4], 1, b"", 1e-6)])
    assert s.streak[F] == 3
    out = s.finished([], [Ran(t[5], 1, b"", 1e-6), Failed(t[6], b"e", "tb")])
    assert s.streak[F] == 0 and out[0].timings == [[F, 1, 1e-6]], "a failure is not timed"
    s.validate()


def test_cancel_skips_tasks_handed_over_and_forgets_tids_that_are_not_here():
    s = WorkerState()
    (ex,) = s.compute([task(1), task(2)], {}, nothing_here)
    assert s.cancel([1, 7]) == [Skip([1])], "tid 7 is not here: nothing to skip (tids are reused)"
    s.validate()
    # 1 was skipped; 2 ran; the scheduler then reuses tid 7 for a new task that must run
    out = s.finished([], [Skipped(ex.tasks[0]), Ran(ex.tasks[1], 1, b"x", 0.1)])
    assert Cancelled([1]) in out and of(Finished, out)[0].tids == [2]
    (ex7,) = s.compute([task(7)], {}, nothing_here)
    assert s.finished([], [Ran(ex7.tasks[0], 1, b"y", 0.1)])[0].tids == [7]
    # cancelled too late: it ran before the executor saw the skip, which must be forgotten
    (ex,) = s.compute([task(9)], {}, nothing_here)
    assert s.cancel([9]) == [Skip([9])]
    out = s.finished([], [Ran(ex.tasks[0], 1, b"z", 0.1)])
    assert out == [Finished([9], [1], [[F, 1, 0.1]], [b"z"]), Unskip([9])]
    assert not s.cancelled and not s.executing
    s.validate()


def test_inline_or_kept_here():
    assert try_inline(3, sizeof, 4096) and try_inline(None, sizeof, 0)
    assert try_inline(b"x" * 100, sizeof, 4096)
    assert not try_inline(b"x" * 20_000, sizeof, 4096)


def test_validate_catches_drifted_counts():
    s = WorkerState()
    s.compute([task(1, ["x"])], {"x": ["tcp://a", 10]}, nothing_here)
    s.validate()
    s.in_flight += 1
    with pytest.raises(AssertionError, match="in_flight"):
        s.validate()


@pytest.mark.parametrize("seed", range(40))
def test_random_event_sequences_keep_every_invariant(seed):
    """Random compute / answers (also late and duplicate) / lost peers / outcomes / cancels,
    validated after every event; then everything drains and every task was reported once."""
    rng = random.Random(seed)
    s = WorkerState(cap=rng.choice([50, 1 << 62]))
    peers = ["tcp://a", "tcp://b", "tcp://c"]
    keys = [f"d{i}" for i in range(8)]
    local = set(rng.sample(keys, 2))  # held here already
    kept: dict[str, int] = {}  # fetched values the loop holds (Keep/Release)
    asked: set[tuple[str, str]] = set()  # (key, address) requests sent
    skip: set[int] = set()  # the executor's view
    queue: list[Task] = []  # handed to the executor, not yet reported
    here: set[int] = set()  # of those, the tids run on the loop thread
    reports: dict[int, int] = {}  # tid -> terminal reports
    live: set[int] = set()  # tids the scheduler considers on this worker
    next_tid = [0]

    def carry(out):
        for ins in out:
            kind = type(ins)
            if kind is Execute:
                for t in ins.tasks:
                    for k in t.deps or ():
                        assert k in t.batch.inline or k in local or k in kept, f"{k} not available"
                queue.extend(ins.tasks)
                if ins.here:
                    here.update(t.tid for t in ins.tasks)
            elif kind is Fetch:
                asked.update((k, ins.address) for k in ins.keys)
            elif kind is Keep:
                assert ins.key not in kept
                kept[ins.key] = ins.nbytes
            elif kind is Release:
                for k in ins.keys:
                    del kept[k]
            elif kind is Skip:
                skip.update(ins.tids)
            elif kind is Unskip:
                skip.difference_update(ins.tids)
            else:
                tids = [ins.tid] if kind is Missing else ins.tids
                for tid in tids:
                    reports[tid] = reports.get(tid, 0) + 1
                    live.discard(tid)
        s.validate()
        assert kept.keys() == s.fetched

    def new_tasks():
        ts = []
        for _ in range(rng.randint(1, 4)):
            tid = next_tid[0]
            next_tid[0] += 1
            deps = rng.sample(keys, rng.randint(0, 3)) or None
            inline = {deps[0]: b"v"} if deps and rng.random() < 0.2 else {}
            ts.append(task(tid, deps, fid=rng.choice([F, b"g" * 16]), inline=inline))
            live.add(tid)
        where = {k: [rng.choice(peers), rng.randint(1, 40)] for k in keys if k not in local}
        return ts, where

    def run_some(n):
        for _ in range(min(n, len(queue))):
            t = queue.pop(rng.randrange(len(queue)))
            if t.tid in skip:
                skip.discard(t.tid)
                o = Skipped(t)
            elif rng.random() < 0.2:
                o = Failed(t, b"e", "tb")
            else:
                o = Ran(t, 1, b"r", rng.choice([1e-6, 0.5]))
            if t.tid in here:
                here.discard(t.tid)
                carry(s.finished([o], []))
            else:
                carry(s.finished([], [o]))

    for _ in range(80):
        r = rng.random()
        if r < 0.3:
            carry(s.compute(*new_tasks(), local.__contains__))
        elif r < 0.55 and asked:
            k, a = rng.choice(sorted(asked))
            if rng.random() < 0.8:
                asked.discard((k, a))  # answered (a duplicate or late answer stays possible)
            if rng.random() < 0.8:
                carry(s.got([k], [], a))
            else:
                carry(s.got([], [k], a))
        elif r < 0.6:
            carry(s.peer_lost(rng.choice(peers)))
        elif r < 0.85:
            run_some(rng.randint(1, 3))
        else:
            carry(s.cancel(rng.sample(sorted(live) + [10_000], min(2, len(live) + 1))))
    # drain: answer every request, run everything
    for _ in range(100):
        if not asked and not queue:
            break
        answering = sorted(asked)
        asked.clear()  # answers may ask for more
        for k, a in answering:
            carry(s.got([k], [], a))
        run_some(len(queue))
    assert not s.waiting, (s.waiting, s.missing_of, s.fetching, s.queued, s.in_flight, s.fetched, asked)
    assert not queue and not kept and not s.fetched_refs
    assert s.in_flight == 0 and s.threaded == 0 and not s.executing and not s.cancelled
    assert all(n == 1 for n in reports.values()), "a task reported twice"
    assert set(reports) == set(range(next_tid[0])), "a task never reported"


def test_a_task_resent_for_a_holder_restarted_at_the_same_address_asks_again():
    """A restarted worker listens where the dead one did (ipc names): the request the dead one
    never answered is forgotten with the cancelled task, and the new holder is asked afresh."""
    s = WorkerState()
    assert s.compute([task(1, ["x"])], {"x": ["ipc://w-0", 100]}, nothing_here) == [Fetch("ipc://w-0", ["x"])]
    assert s.cancel([1]) == [Cancelled([1])]
    assert s.fetching == {} and s.in_flight == 0
    s.validate()
    out = s.compute([task(1, ["x"])], {"x": ["ipc://w-0", 100]}, nothing_here)
    assert out == [Fetch("ipc://w-0", ["x"])], "asked again, not left waiting for the dead one's answer"
    out = s.got(["x"], [], "ipc://w-0")
    assert out[0] == Keep("x", 100)
    assert [t.tid for t in of(Execute, out)[0].tasks] == [1]
    s.validate()


def test_a_fetch_another_task_still_needs_survives_a_cancel():
    s = WorkerState()
    s.compute([task(1, ["x"]), task(2, ["x"])], {"x": ["tcp://a", 10]}, nothing_here)
    assert s.cancel([1]) == [Cancelled([1])]
    assert s.fetching == {"x": "tcp://a"}
    s.validate()
    out = s.got(["x"], [], "tcp://a")
    assert [t.tid for t in of(Execute, out)[0].tasks] == [2]


def test_a_cancel_that_abandons_a_fetch_sends_a_queued_one():
    s = WorkerState(cap=100)
    s.compute([task(1, ["x"]), task(2, ["y"])], {"x": ["tcp://a", 100], "y": ["tcp://b", 100]}, nothing_here)
    assert s.queued == {"y": "tcp://b"}
    assert s.cancel([1]) == [Cancelled([1]), Fetch("tcp://b", ["y"])]
    assert s.in_flight == 100
    s.validate()


def test_inputs_viewed_through_same_host_references_are_kept_before_their_tasks_run():
    s = WorkerState()
    where = {"x": ["ipc://a", 100, b"ref"], "y": ["ipc://a", 50]}
    out = s.compute([task(1, ["x"]), task(2, ["x", "y"])], where, nothing_here, {"x": 100})
    # x is kept first (the task reads it at once), y is asked of its holder as usual
    assert out[0] == Keep("x", 100)
    (ex,) = of(Execute, out)
    assert [t.tid for t in ex.tasks] == [1] and out.index(ex) > 0
    assert of(Fetch, out) == [Fetch("ipc://a", ["y"])]
    assert s.fetched == {"x"} and s.fetched_bytes == 100 and s.in_flight == 50
    s.validate()
    (ex2,) = of(Execute, s.got(["y"], [], "ipc://a"))
    s.finished([], [Ran(ex.tasks[0], 8, b"r", 0.1)])
    assert s.fetched == {"x", "y"}, "task 2 still reads x"
    out = s.finished([], [Ran(ex2.tasks[0], 8, b"r", 0.1)])
    assert sorted(of(Release, out)[0].keys) == ["x", "y"] and not s.fetched and s.fetched_bytes == 0
    s.validate()


def test_a_viewed_input_already_being_fetched_waits_for_that_fetch():
    s = WorkerState()
    s.compute([task(1, ["x"])], {"x": ["ipc://a", 10]}, nothing_here)
    out = s.compute([task(2, ["x"])], {"x": ["ipc://a", 10, b"ref"]}, nothing_here, {"x": 10})
    assert not of(Keep, out) and not of(Execute, out) and s.fetching == {"x": "ipc://a"}
    s.validate()


def test_held_results_report_their_references():
    s = WorkerState()
    (ex,) = of(Execute, s.compute([task(1), task(2)], {}, nothing_here))
    t1, t2 = ex.tasks
    (fin,) = s.finished([], [Ran(t1, 10**6, None, 0.1, b"ref1"), Ran(t2, 8, b"inline", 0.1)])
    assert fin.refs == {1: b"ref1"} and fin.blobs == [None, b"inline"]
