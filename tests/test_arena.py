"""The shared-memory arena: allocator, pins across real processes, crashes, cleanup."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import frisky
from frisky import protocol, shm
from frisky.data import dataplane
from frisky.shm import arena

MiB = 2**20
PAGE = arena.PAGE


@pytest.fixture
def cid():
    cluster = shm.new_cluster_id()
    yield cluster
    shm.sweep(cluster)


def _files(cluster: str) -> list[str]:
    return [n for n in os.listdir(shm.SHM_DIR) if n.startswith(f"frisky-{cluster}-")]


def test_blocks_are_page_aligned_and_freed_blocks_are_reused(cid):
    a = arena.Arena(cid, 16 * MiB)
    try:
        b1 = a.alloc(3 * MiB + 5)
        b2 = a.alloc(MiB)
        assert b1.offset % PAGE == 0 and b2.offset % PAGE == 0
        assert b2.offset >= b1.offset + 3 * MiB + 5
        np.frombuffer(b1.buf, np.uint8)[:] = 7
        off1 = b1.offset
        del b1
        gc.collect()
        b3 = a.alloc(2 * MiB)  # fits in the freed hole: the same, already-touched pages
        assert b3.offset == off1
        assert b3.gen == 1  # freed once
        assert a.stats()["used"] == 3 * MiB
        del b2, b3
        gc.collect()
        assert a.stats()["used"] == 0 and a.stats()["top"] == 0  # coalesced back to the start
        assert _files(cid) == [a.name]
    finally:
        a.close()
    assert _files(cid) == []


def test_a_full_arena_says_so_and_a_task_keeps_its_value_on_the_heap(cid):
    a = arena.Arena(cid, 4 * MiB)
    try:
        b = a.alloc(3 * MiB)
        assert a.alloc(2 * MiB) is None
        frames = dataplane.dumps(np.ones(MiB // 4))  # 2 MiB
        shared = dataplane.share(frames, cid, shm.Registry(), arena=a)
        assert not dataplane.is_shared(shared)  # stays as bytes; nothing failed
        assert dataplane.loads(dataplane.views(shared)).sum() == MiB // 4
        del b
    finally:
        a.close()


def test_values_round_trip_through_arena_descriptors(cid):
    a = arena.Arena(cid, 64 * MiB)
    try:
        x = np.arange(MiB, dtype="float64")
        shared = dataplane.share(dataplane.dumps(x), cid, shm.Registry(), arena=a)
        assert dataplane.is_shared(shared)
        descs, out = dataplane.encode(shared, same_host=True, prefer=None)
        assert [d[0] for d in descs] == [dataplane.RAW, dataplane.ARENA]
        protocol._descriptor(descs[1], False)  # the boundary accepts what we send
        y = dataplane.loads(dataplane.decode(descs, out))
        assert not y.flags.writeable  # a read-only view, no copy
        assert np.array_equal(x, y)
        # across hosts the same value travels as bytes
        descs2, _ = dataplane.encode(shared, same_host=False, prefer=None)
        assert dataplane.ARENA not in [d[0] for d in descs2]
        del y, shared
    finally:
        a.close()


def test_a_same_host_reference_views_the_value_until_its_block_is_reused(cid):
    a = arena.Arena(cid, 64 * MiB)
    try:
        x = np.arange(MiB // 8, dtype="float64")
        shared = dataplane.share(dataplane.dumps(x), cid, shm.Registry(), arena=a)
        ref = dataplane.reference(shared)
        assert ref is not None and len(ref) <= protocol.MAX_REF
        y = dataplane.from_reference(ref)
        assert np.array_equal(x, y) and not y.flags.writeable
        del y, shared
        gc.collect()
        b = a.alloc(MiB)  # the freed block is reused: the reference is stale
        with pytest.raises(FileNotFoundError):
            dataplane.from_reference(ref)
        del b
        # values not wholly in the arena have no reference
        assert dataplane.reference(dataplane.dumps(x)) is None
        assert dataplane.reference(dataplane.dumps(b"small")) is None
    finally:
        a.close()


@pytest.mark.parametrize("ref", [
    b"", b"\xc1", msgpack.packb([]), msgpack.packb([[], b"x"]), msgpack.packb([[[0]], "x"]),
    msgpack.packb([[[0], [0]], b"x"]), msgpack.packb([[[0], [4, "../etc/passwd", 0, 8, 0]], b"x"]),
    msgpack.packb([[[0], [4, "frisky-nope-1xa", 0, 8, 0]], b"x"]), msgpack.packb([[[9]], b"x"]),
])
def test_malformed_references_raise(ref):
    with pytest.raises((ValueError, TypeError, FileNotFoundError)):
        dataplane.from_reference(ref)


@pytest.mark.parametrize("bad", [
    [4, "n", 0, 1], [4, 1, 0, 1, 0], [4, "n", -1, 1, 0], [4, "n", 0, 0, 0], [4, "n", 0, 1, -1],
    [4, "n", 0.5, 1, 0],
])
def test_malformed_arena_descriptors_are_refused(bad):
    with pytest.raises(protocol.ProtocolError):
        protocol._descriptor(bad, False)


def test_bad_or_stale_descriptors_raise_clear_errors(cid):
    a = arena.Arena(cid, 8 * MiB)
    try:
        b = a.alloc(MiB)
        name, off, n, gen = b.descriptor()
        with pytest.raises(ValueError):
            arena.attach(name, off + 1, n, gen)  # not page aligned
        with pytest.raises(ValueError):
            arena.attach(name, off, 64 * MiB, gen)  # past the end
        with pytest.raises(ValueError):
            arena.attach("../etc/passwd", 0, 1, 0)
        with pytest.raises(FileNotFoundError):
            arena.attach(f"frisky-{cid}-0x0", 0, 1, 0)
        del b
        gc.collect()
        with pytest.raises(FileNotFoundError):  # freed: a late descriptor finds nothing
            arena.attach(name, off, n, gen)
    finally:
        a.close()


_READER = textwrap.dedent("""
    import sys
    import numpy as np
    from frisky.shm import arena
    name, off, n, gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    v = np.frombuffer(arena.attach(name, off, n, gen), np.uint8)
    print(int(v[:4096].sum()), flush=True)
    sys.stdin.readline()          # hold the view until told
    del v
    print("dropped", arena.pinned(name), flush=True)
    sys.stdin.readline()
""")


def _reader(desc) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.Popen([sys.executable, "-c", _READER, *map(str, desc)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def _end(p: subprocess.Popen | None) -> None:
    if p is None:
        return
    if p.poll() is None:
        p.kill()
    p.wait(30)
    for f in (p.stdin, p.stdout):
        if f is not None:
            f.close()


def test_a_reader_in_another_process_pins_its_block_until_it_drops_it(cid):
    a = arena.Arena(cid, 8 * MiB)
    p = None
    try:
        b = a.alloc(MiB)
        np.frombuffer(b.buf, np.uint8)[:] = 1
        p = _reader(b.descriptor())
        assert p.stdout.readline().strip() == "4096"  # it sees the owner's bytes
        off = b.offset
        del b
        gc.collect()
        assert a.stats()["pinned"] == 1  # released by the owner, still viewed elsewhere
        assert a.alloc(MiB).offset != off  # so it is not handed out again
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().split() == ["dropped", "0"]
        assert a.reclaim() == 0
        assert a.stats()["pinned"] == 0
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.wait(30) == 0
    finally:
        _end(p)
        a.close()


def test_a_killed_reader_unpins_and_a_dead_owners_block_stays_readable(cid):
    a = arena.Arena(cid, 8 * MiB)
    p = None
    try:
        b = a.alloc(MiB)
        p = _reader(b.descriptor())
        assert p.stdout.readline()
        del b
        gc.collect()
        assert a.reclaim() == 1
        os.kill(p.pid, signal.SIGKILL)  # the kernel drops its record locks
        p.wait(30)
        assert a.reclaim() == 0
    finally:
        _end(p)
        a.close()


def test_views_outlive_the_owner_closing_its_arena(cid):
    # A reader in this process of an arena another process owned: simulate the owner with
    # a child that makes a block, hands us its descriptor and is then killed with -9.
    code = textwrap.dedent("""
        import sys, numpy as np
        from frisky.shm import arena
        a = arena.Arena(sys.argv[1], 8 << 20)
        b = a.alloc(1 << 20)
        np.frombuffer(b.buf, np.uint8)[:] = 3
        print(*b.descriptor(), flush=True)
        sys.stdin.readline()
    """)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen([sys.executable, "-c", code, cid], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    try:
        name, off, n, gen = p.stdout.readline().split()
        v = np.frombuffer(arena.attach(name, int(off), int(n), int(gen)), np.uint8)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        assert shm.sweep_owner(cid, p.pid) == 1  # what the cluster does for a dead worker
        assert _files(cid) == []
        assert int(v.sum()) == 3 * MiB  # still valid memory
        del v
        gc.collect()
        assert arena.trim() >= 1  # the gone arena's mapping is dropped once unused
    finally:
        _end(p)


def test_trim_gives_free_pages_back(cid):
    a = arena.Arena(cid, 64 * MiB, idle=64 * MiB)
    try:
        b = a.alloc(16 * MiB)
        c = a.alloc(16 * MiB)
        np.frombuffer(b.buf, np.uint8)[:] = 1
        del b
        gc.collect()
        assert a.trim() >= 16 * MiB
        b = a.alloc(8 * MiB)  # a punched page is reserved again and reads as zero
        assert b.offset == 0 and not np.frombuffer(b.buf, np.uint8).any()
        del b, c
    finally:
        a.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3 * MiB)), max_size=40))
def test_allocator_never_overlaps_and_returns_everything(ops):
    cluster = shm.new_cluster_id()
    a = arena.Arena(cluster, 16 * MiB)
    try:
        live = []
        for alloc, n in ops:
            if alloc or not live:
                live.append(a.alloc(n))
                if live[-1] is None:
                    live.pop()
            else:
                live.pop(n % len(live))  # freed at once: no cycles hold blocks
            spans = sorted((b.offset, b.offset + arena._round(b.size)) for b in live)
            assert all(s[1] <= t[0] for s, t in zip(spans, spans[1:]))
            assert all(end <= a.capacity for _, end in spans)
        live.clear()
        assert a.stats()["used"] == 0 and a.stats()["top"] == 0
    finally:
        a.close()
        shm.sweep(cluster)


def make(n):
    return np.ones(n)


def total(a):
    return float(a.sum())


def test_cluster_moves_values_through_one_arena_per_worker_and_cleans_up():
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1) as c, c.get_client() as cl:
        cid = c.cluster_id
        a, b = sorted(cl.scheduler_info()["workers"])
        for _ in range(3):
            x = cl.submit(make, MiB, workers=[a], pure=False)
            assert cl.submit(total, x, workers=[b], pure=False).result(timeout=60) == MiB
            assert float(x.result(timeout=60).sum()) == MiB  # the client reads it too
            del x
        names = _files(cid)
        assert len(names) == 2 and all("xa" in n.rsplit("-", 1)[1] for n in names), names
    assert _files(cid) == []


def test_a_reader_on_the_same_host_views_a_result_without_asking_its_holder():
    """The scheduler forwards the holder's block reference with the task: the reader needs
    nothing from the holder, which here is stopped (SIGSTOP) while the reader runs."""
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1) as c, c.get_client() as cl:
        info = cl.scheduler_info()["workers"]
        a, b = sorted(info)
        x = cl.submit(make, MiB, workers=[a], pure=False)
        frisky.wait([x], timeout=60)
        os.kill(info[a]["pid"], signal.SIGSTOP)
        try:
            assert cl.submit(total, x, workers=[b], pure=False).result(timeout=10) == MiB
        finally:
            os.kill(info[a]["pid"], signal.SIGCONT)
        del x


def test_a_client_on_the_same_host_views_results_without_asking_their_holder():
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1) as c, c.get_client() as cl:
        info = cl.scheduler_info()["workers"]
        a = sorted(info)[0]
        xs = [cl.submit(make, MiB, workers=[a], pure=False) for _ in range(3)]
        frisky.wait(xs, timeout=60)
        os.kill(info[a]["pid"], signal.SIGSTOP)
        try:
            first = xs[0].result(timeout=10)
            rest = cl.gather(xs[1:])
        finally:
            os.kill(info[a]["pid"], signal.SIGCONT)
        assert all(float(v.sum()) == MiB and not v.flags.writeable for v in [first, *rest])
        del first, rest, xs


_SCRIPT = """
import sys, frisky, numpy as np
cluster = frisky.LocalCluster(n_workers=2)
c = cluster.get_client()
x = c.submit(np.ones, 1_000_000)  # a value in a worker's arena
x.result(timeout=30)
print(cluster.cluster_id, flush=True)
sys.stdin.readline()
"""


def test_arenas_of_a_tree_killed_with_sigkill_are_swept_by_the_next_start():
    import psutil

    env = dict(os.environ, FRISKY_TEST_OWNER="arena-kill")
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        cid = proc.stdout.readline().strip()
        assert cid and len(_files(cid)) >= 2  # the workers' arenas
        tree = [p for p in psutil.process_iter(["environ"])
                if (p.info["environ"] or {}).get("FRISKY_TEST_OWNER") == "arena-kill"]
        for p in tree:  # the whole tree at once: nobody is left to clean up
            p.kill()
        psutil.wait_procs(tree, timeout=30)
        # (the files are there now, unless a cluster started meanwhile swept them already)
        with frisky.LocalCluster(n_workers=1, threads_per_worker=1):
            assert _files(cid) == []
    finally:
        _end(proc)


def test_the_hosts_shm_limit_is_one_budget_for_all_of_its_workers(monkeypatch):
    monkeypatch.setenv("FRISKY_SHM_LIMIT", str(16 * MiB))  # the host's whole arena
    with frisky.LocalCluster(n_workers=2, threads_per_worker=1) as c, c.get_client() as cl:
        a, b = sorted(cl.scheduler_info()["workers"])
        xs = [cl.submit(make, 4 * MiB // 8, workers=[a], pure=False) for _ in range(3)]
        frisky.wait(xs, timeout=60)

        def held():
            return {n: os.stat(os.path.join(shm.SHM_DIR, n)).st_blocks * 512 for n in _files(c.cluster_id)}

        # 12 MiB made on a: more than half of the host's 16 MiB, none of it needed by b
        assert max(held().values()) >= 12 * MiB, held()
        ys = [cl.submit(make, 4 * MiB // 8, workers=[b], pure=False) for _ in range(2)]
        frisky.wait(ys, timeout=60)
        # what does not fit in what is left of the budget stays on b's heap
        headers = 2 * (16 * MiB // PAGE * 4 + PAGE)
        assert sum(held().values()) <= 16 * MiB + headers, held()
        assert [cl.submit(total, x, workers=[b], pure=False).result(timeout=60) for x in xs] == [4 * MiB // 8] * 3
        assert [cl.submit(total, y, workers=[a], pure=False).result(timeout=60) for y in ys] == [4 * MiB // 8] * 2
        del xs, ys
