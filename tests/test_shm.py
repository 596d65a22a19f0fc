"""POSIX shared-memory segments: real files in /dev/shm, real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from frisky import shm
from frisky.shm import segments
from frisky.telemetry import recorder

pytestmark = pytest.mark.skipif(not os.path.isdir(shm.SHM_DIR), reason="needs /dev/shm")

ROOT = Path(__file__).resolve().parents[1]


def _files(cluster_id: str) -> list[str]:
    return sorted(n for n in os.listdir(shm.SHM_DIR) if n.startswith(f"frisky-{cluster_id}-"))


@pytest.fixture(autouse=True)
def _no_leaks():
    """Yield a list for the test's cluster ids; afterwards none may have files left."""
    ids: list[str] = []
    yield ids
    leftover = {cid: _files(cid) for cid in ids}
    for cid in ids:
        shm.sweep(cid)  # clean up even when failing, so one failure doesn't leak into /dev/shm
    assert not any(leftover.values()), f"segments left behind: {leftover}"


@pytest.fixture
def cid(_no_leaks) -> str:
    cid = shm.new_cluster_id()
    _no_leaks.append(cid)
    return cid


def _child(code: str, *args: str) -> subprocess.Popen:
    """A Python child that runs ``code`` with frisky importable, then waits on stdin."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.Popen(
        [sys.executable, "-c", code + "\nsys.stdin.read()", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _readline(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline().strip()
    if not line:  # the child died: show why
        proc.kill()
        raise AssertionError(proc.stderr.read())
    return line


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


CHILD_WRITE = """
import sys
import numpy as np
from frisky import shm
cid = sys.argv[1] if len(sys.argv) > 1 else shm.new_cluster_id()
segs = [shm.write(cid, np.arange(100_000, dtype="f8") * i) for i in range(3)]
print(cid, " ".join(s.name for s in segs), flush=True)
"""


def test_cluster_ids():
    ids = {shm.new_cluster_id() for _ in range(100)}
    assert len(ids) == 100
    for cid in ids:
        assert segments._ID.fullmatch(cid) and len(cid) <= 16
        assert shm.cluster_pid(cid) == os.getpid()
    assert shm.cluster_pid("nopid") is None and shm.cluster_pid("zzp1") is None


def test_write_attach_roundtrip(cid):
    arr = np.arange(200_000, dtype="f8").reshape(400, 500)
    seg = shm.write(cid, arr)
    assert seg.name.startswith(f"frisky-{cid}-{os.getpid():x}x")
    assert seg.size == arr.nbytes and not seg.buf.readonly
    assert os.stat(os.path.join(shm.SHM_DIR, seg.name)).st_mode & 0o777 == 0o600
    other = shm.attach(seg.name)
    view = np.frombuffer(other.buf, "f8").reshape(400, 500)
    assert np.array_equal(view, arr)
    seg.buf[:8] = np.float64(42).tobytes()  # same pages: the creator's writes show through
    assert view[0, 0] == 42
    shm.unlink(seg.name)


def test_create_then_fill(cid):
    seg = shm.create(cid, 10_000)
    assert bytes(seg.buf) == bytes(10_000)
    seg.buf[:5] = b"hello"
    assert bytes(shm.attach(seg.name).buf[:5]) == b"hello"
    seg.close()
    shm.unlink(seg.name)


def test_write_accepts_any_buffer(cid):
    for data in (
        b"abc" * 1000,
        bytearray(b"xyz" * 30_000),
        memoryview(b"q" * 10),
        np.arange(12, dtype="i2").reshape(3, 4),
        np.arange(100_000.0)[::2],
    ):
        seg = shm.write(cid, data)
        expected = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        assert bytes(shm.attach(seg.name).buf) == expected
        shm.unlink(seg.name)


def test_attached_view_is_read_only(cid):
    seg = shm.write(cid, np.ones(1000))
    view = np.frombuffer(shm.attach(seg.name).buf, "f8")
    assert view.flags.writeable is False
    with pytest.raises(ValueError):
        view[0] = 2.0
    with pytest.raises(ValueError):
        view.flags.writeable = True
    with pytest.raises(TypeError):
        shm.attach(seg.name).buf[0] = 1
    shm.unlink(seg.name)


def test_view_survives_unlink_and_close(cid):
    arr = np.random.default_rng(0).random(100_000)
    seg = shm.write(cid, arr)
    view = np.frombuffer(shm.attach(seg.name).buf, "f8")  # the Segment object is gone already
    shm.unlink(seg.name)
    seg.close()
    assert not os.path.exists(os.path.join(shm.SHM_DIR, seg.name))
    assert np.array_equal(view, arr)
    with pytest.raises(FileNotFoundError):
        shm.attach(seg.name)
    shm.unlink(seg.name)  # missing: no error


def test_close_with_exported_views(cid):
    seg = shm.write(cid, np.arange(1000.0))
    view = np.frombuffer(seg.buf, "f8")
    part = seg.buf[8:16]
    seg.close()  # views still alive: must not raise, must not unmap
    assert view[999] == 999.0 and bytes(part) == np.float64(1).tobytes()
    del view, part
    seg.close()  # now it really closes
    with pytest.raises(ValueError):
        seg.buf[0]
    seg.close()  # idempotent
    shm.unlink(seg.name)


def test_zero_size_segments(cid):
    seg = shm.create(cid, 0)
    assert seg.size == 0 and seg.buf.nbytes == 0 and not seg.buf.readonly
    other = shm.attach(seg.name)
    assert other.size == 0 and other.buf.nbytes == 0 and other.buf.readonly
    assert np.frombuffer(other.buf, "f8").shape == (0,)
    seg.close()
    other.close()
    empty = shm.write(cid, b"")
    assert shm.attach(empty.name).size == 0
    assert shm.sweep(cid) == 2


def test_full_shm_raises_instead_of_sigbus(cid):
    st = os.statvfs(shm.SHM_DIR)
    total = st.f_blocks * st.f_frsize
    if not total:
        pytest.skip("/dev/shm has no size limit")
    with pytest.raises(OSError):
        shm.create(cid, 2 * total)  # tmpfs refuses at once: more than the whole filesystem
    assert _files(cid) == []  # the half-made file is gone


def test_bad_names_are_refused(cid):
    for name in ("../etc/passwd", "frisky-a-b/../../x", "other-file", "frisky-a", "frisky-a-b.c"):
        with pytest.raises(ValueError):
            shm.attach(name)
        with pytest.raises(ValueError):
            shm.unlink(name)
    for cid in ("a-b", "a/b", "", "a.b"):
        with pytest.raises(ValueError):
            shm.create(cid, 10)
        with pytest.raises(ValueError):
            shm.sweep(cid)


def test_names_are_unique(cid):
    segs = [shm.create(cid, 1) for _ in range(200)]
    assert len({s.name for s in segs}) == 200
    assert len(_files(cid)) == 200
    assert shm.sweep(cid) == 200


def test_spans_recorded(cid):
    before = {k: v[0] for k, v in recorder.totals.items()}
    seg = shm.write(cid, b"x" * 100)
    shm.attach(seg.name)
    for name in ("shm.write", "shm.map"):
        assert recorder.totals[name][0] == before.get(name, 0) + 1
    shm.unlink(seg.name)


def test_view_survives_creator_sigkill(cid):
    proc = _child(CHILD_WRITE, cid)
    try:
        cid, *names = _readline(proc).split()
        assert cid == cid
        before = np.frombuffer(shm.attach(names[1]).buf, "f8")  # mapped while the child lives
        _kill9(proc)
    finally:
        proc.kill()
        proc.wait()
    after = np.frombuffer(shm.attach(names[1]).buf, "f8")  # mapped after it died
    expected = np.arange(100_000, dtype="f8")
    assert np.array_equal(before, expected) and np.array_equal(after, expected)
    assert shm.sweep_owner(cid, proc.pid) == 3
    assert _files(cid) == []
    assert np.array_equal(before, expected) and np.array_equal(after, expected)


def test_sweep_owner_leaves_other_processes(cid):
    mine = shm.write(cid, b"mine")
    proc = _child(CHILD_WRITE, cid)
    try:
        _readline(proc)
        assert len(_files(cid)) == 4
        _kill9(proc)
    finally:
        proc.kill()
        proc.wait()
    assert shm.sweep_owner(cid, proc.pid) == 3
    assert _files(cid) == [mine.name]
    assert shm.sweep_owner(cid, proc.pid) == 0
    shm.unlink(mine.name)


def test_sweep_by_cluster_id(cid, _no_leaks):
    other = shm.new_cluster_id()
    _no_leaks.append(other)
    for _ in range(3):
        shm.write(cid, b"a")
    kept = shm.write(other, b"b")
    assert shm.sweep(cid) == 3
    assert _files(cid) == [] and _files(other) == [kept.name]
    assert shm.sweep(cid) == 0
    assert shm.sweep(other) == 1


def test_sweep_dead_clusters(cid, _no_leaks):
    alive = shm.write(cid, b"alive")
    proc = _child(CHILD_WRITE)
    try:
        dead, *names = _readline(proc).split()
        _no_leaks.append(dead)
        assert shm.cluster_pid(dead) == proc.pid
        view = np.frombuffer(shm.attach(names[2]).buf, "f8")
        assert shm.sweep() >= 0 and len(_files(dead)) == 3  # owner alive: untouched
        _kill9(proc)
    finally:
        proc.kill()
        proc.wait()
    assert shm.sweep() >= 3  # other dead clusters on this host may go too
    assert _files(dead) == []
    assert _files(cid) == [alive.name]  # our own cluster is alive
    assert np.array_equal(view, np.arange(100_000, dtype="f8") * 2)
    shm.unlink(alive.name)


def test_child_maps_parent_segment_zero_copy(cid):
    arr = np.arange(1 << 20, dtype="i4")
    seg = shm.write(cid, arr)
    proc = _child(
        "import sys, numpy as np\nfrom frisky import shm\n"
        f"v = np.frombuffer(shm.attach({seg.name!r}).buf, 'i4')\n"
        "print(int(v.sum()), v.flags.writeable, flush=True)"
    )
    try:
        assert _readline(proc) == f"{int(arr.sum())} False"
        proc.stdin.close()
        assert proc.wait() == 0
    finally:
        proc.kill()
        proc.wait()
    seg.close()
    shm.unlink(seg.name)


def test_registry_refcounts(cid):
    reg = shm.Registry()
    a, b = shm.write(cid, b"a" * 100), shm.write(cid, np.arange(10.0))
    view = np.frombuffer(b.buf, "f8")  # a live view must not make release fail
    reg.add(a)
    reg.add(b)
    reg.incref(a.name)
    assert reg.count(a.name) == 2 and len(reg) == 2 and a.name in reg and reg.get(a.name) is a
    assert reg.decref(a.name) is False
    assert os.path.exists(os.path.join(shm.SHM_DIR, a.name))
    assert reg.decref(a.name) is True
    assert not os.path.exists(os.path.join(shm.SHM_DIR, a.name))
    assert reg.decref(a.name) is False  # a duplicate release is harmless
    assert reg.decref(b.name) is True
    assert view[9] == 9.0
    assert len(reg) == 0 and _files(cid) == []


def test_registry_incref_of_received_name(cid):
    seg = shm.write(cid, b"handed over")
    reg = shm.Registry()
    reg.incref(seg.name)  # ownership passed to this process by name only
    assert reg.get(seg.name) is None and reg.count(seg.name) == 1
    assert reg.decref(seg.name) is True
    assert _files(cid) == []


def test_registry_release_all(cid):
    reg = shm.Registry()
    segs = [shm.write(cid, bytes([i]) * 1000) for i in range(5)]
    for s in segs:
        reg.add(s)
    reg.incref(segs[0].name)
    view = np.frombuffer(shm.attach(segs[1].name).buf, "u1")
    reg.release_all()
    assert len(reg) == 0 and _files(cid) == []
    assert view[0] == 1
