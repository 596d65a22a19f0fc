"""WorkerState directly: tasks in, fetches and ready tasks out; no sockets, no threads."""

from __future__ import annotations

from frisky.worker.state import WorkerState


def task(tid, deps):
    return (tid, f"k{tid}", b"f" * 16, b"payload", deps, {"inline": {}, "decoded": {}, "fns": {}})


def nothing_here(key):
    return False


def test_a_task_resent_with_a_new_holder_fetches_from_it_and_ignores_the_old_one():
    s = WorkerState()
    ready, fetch = s.compute([task(1, ["x"])], {"x": ["tcp://a", 100]}, nothing_here)
    assert not ready and fetch == {"tcp://a": ["x"]}
    # the holder died: the scheduler cancels the task, recomputes x elsewhere, sends it again
    assert s.cancel([1]) == [1]
    ready, fetch = s.compute([task(1, ["x"])], {"x": ["tcp://b", 100]}, nothing_here)
    assert not ready and fetch == {"tcp://b": ["x"]}, "asks the new holder, not the dead one"
    assert s.in_flight == 100, "the abandoned request no longer counts"
    # a late answer from the old peer (or its replacement at that address) changes nothing
    assert s.got({}, ["x"], "tcp://a") == ([], [])
    assert s.got({"x": "stale"}, [], "tcp://a") == ([], [])
    ready, report = s.got({"x": "value"}, [], "tcp://b")
    assert [t[0] for t in ready] == [1] and report == []
    assert s.fetched == {"x": "value"} and s.in_flight == 0


def test_the_same_holder_again_is_not_asked_twice():
    s = WorkerState()
    s.compute([task(1, ["x"])], {"x": ["tcp://a", 10]}, nothing_here)
    ready, fetch = s.compute([task(2, ["x"])], {"x": ["tcp://a", 10]}, nothing_here)
    assert fetch == {} and s.in_flight == 10
    ready, _ = s.got({"x": 1}, [], "tcp://a")
    assert sorted(t[0] for t in ready) == [1, 2]


def test_a_queued_fetch_moves_to_the_new_holder_without_leaking_its_bytes():
    s = WorkerState()
    s.cap = 100
    s.compute([task(1, ["big"])], {"big": ["tcp://a", 100]}, nothing_here)
    _, fetch = s.compute([task(2, ["x"])], {"x": ["tcp://a", 50]}, nothing_here)
    assert fetch == {} and s.queued == [("x", "tcp://a")], "over the cap: waits its turn"
    _, fetch = s.compute([task(3, ["x"])], {"x": ["tcp://b", 50]}, nothing_here)
    assert s.queued == [("x", "tcp://b")] and s.in_flight == 100
    s.got({"big": 0}, [], "tcp://a")
    assert s.more_fetches() == {"tcp://b": ["x"]} and s.in_flight == 50
