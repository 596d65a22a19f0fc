"""The spill file: round trips, integrity, errors, space reuse, cleanup — on real files."""

from __future__ import annotations

import contextlib
import errno
import gc
import mmap
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

from frisky.spill import ChecksumError, SpillError, SpillFile, sweep
from frisky.spill.checksum import checksum
from frisky.spill.index import Extents
from frisky.telemetry import recorder

MiB = 1 << 20
WAIT = 30  # seconds: generous, only reached when something is broken


class Done:
    """Collects on_done calls; ``wait(key)`` returns the error (None on success)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict = {}
        self.results: dict = {}
        self.calls: list = []

    def _event(self, key):
        with self.lock:
            return self.events.setdefault(key, threading.Event())

    def __call__(self, key, err) -> None:
        with self.lock:
            self.calls.append(key)
            self.results[key] = err
        self._event(key).set()

    def wait(self, key):
        assert self._event(key).wait(WAIT), f"on_done({key!r}) never called"
        return self.results[key]


@pytest.fixture
def sf(tmp_path):
    f = SpillFile(str(tmp_path), name="test")
    yield f
    f.close()


def as_bytes(frame) -> bytes:
    return bytes(memoryview(frame).cast("B")) if not isinstance(frame, bytes) else frame


def raw_bytes(frame) -> bytes:
    if isinstance(frame, np.ndarray):
        return frame.tobytes()
    return bytes(memoryview(frame).cast("B")) if not isinstance(frame, bytes) else frame


def roundtrip(sf: SpillFile, key, frames) -> list:
    done = Done()
    sf.put(key, frames, on_done=done)
    assert done.wait(key) is None
    out = sf.get(key)
    assert len(out) == len(frames)
    for got, want in zip(out, frames):
        assert as_bytes(got) == raw_bytes(want)
    return out


def rng_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# --- round trips --------------------------------------------------------------------------

SIZES = [0, 1, 4095, 4096, 4097, 3 * MiB + 5, 9 * MiB + 3]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_roundtrip_buffers(sf, size, kind):
    data = rng_bytes(size, seed=size)
    frame = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data)}[kind]
    roundtrip(sf, f"{kind}-{size}", [frame])
    assert sf.nbytes(f"{kind}-{size}") == size


@pytest.mark.parametrize("dtype", ["u1", "i4", "f8", "c16", "M8[s]", [("a", "i2"), ("b", "f8")]])
@pytest.mark.parametrize("n", [0, 1, 1000, 300_001, 2_000_000])
def test_roundtrip_numpy(sf, dtype, n):
    dt = np.dtype(dtype)
    if dt.kind == "M":
        arr = np.arange(n, dtype="i8").astype(dt)
    elif dt.names:
        arr = np.zeros(n, dtype=dt)
        arr["a"] = np.arange(n) % 1000
        arr["b"] = np.random.default_rng(1).random(n)
    else:
        arr = (np.random.default_rng(2).random(n) * 1000).astype(dt)
    out = roundtrip(sf, ("arr", str(dtype), n), [arr])
    back = np.frombuffer(out[0], dtype=dt) if n else np.empty(0, dt)
    np.testing.assert_array_equal(back, arr)


def test_multiframe_compressible_and_incompressible(sf):
    frames = [
        b"pickle-header" * 3,
        np.arange(3 * MiB // 8, dtype="f8"),  # compresses (shuffle + zstd)
        rng_bytes(5 * MiB + 17, seed=3),  # does not
        b"",
        np.zeros(4097, dtype="u1"),
        np.arange(1_000_003, dtype="i4")[::-1].copy(),
    ]
    roundtrip(sf, "multi", frames)
    st = sf.stats
    assert st["bytes_logical"] == sum(raw_bytes(f).__len__() for f in frames)
    if _have_compression():
        assert st["bytes_written"] < st["bytes_logical"]  # the arange frames shrank


def _have_compression() -> bool:
    try:
        import frisky.data.compression  # noqa: F401
    except ImportError:
        return False
    return True


def test_compression_off(tmp_path):
    with SpillFile(str(tmp_path), compression="none") as sf:
        arr = np.arange(MiB // 8, dtype="f8")
        roundtrip(sf, "plain", [arr])
        assert sf.stats["bytes_written"] >= arr.nbytes


def test_values_packed_and_many_small(sf):
    done = Done()
    for i in range(300):
        sf.put(f"s-{i}", [rng_bytes(i * 37, seed=i), b"x" * (i % 5)], on_done=done)
    sf.flush(WAIT)
    assert sorted(done.calls) == sorted(f"s-{i}" for i in range(300))
    assert all(err is None for err in done.results.values())
    for i in range(300):
        a, b = sf.get(f"s-{i}")
        assert as_bytes(a) == rng_bytes(i * 37, seed=i) and as_bytes(b) == b"x" * (i % 5)
    assert len(sf) == 300 and set(sf.keys()) == {f"s-{i}" for i in range(300)}


def test_non_contiguous_input(sf):
    arr = np.arange(100_000, dtype="f8")[::3]
    out = roundtrip(sf, "strided", [arr])
    np.testing.assert_array_equal(np.frombuffer(out[0]), arr)


def test_itemsizes_mismatch_rejected(sf):
    with pytest.raises(ValueError):
        sf.put("x", [b"a", b"b"], itemsizes=[1])


def test_replace_key(sf):
    roundtrip(sf, "k", [b"first" * 1000])
    roundtrip(sf, "k", [b"second" * 1000])
    assert len(sf) == 1


# --- pending values -----------------------------------------------------------------------


def test_get_and_stream_while_pending(sf):
    # The I/O thread runs on_done: blocking it in the first value's callback keeps the second
    # value pending (queued) for as long as we want, without sleeping.
    gate = threading.Event()
    done = Done()

    def blocking(key, err):
        gate.wait(WAIT)
        done(key, err)

    first = rng_bytes(10_000, seed=1)
    second = np.arange(2 * MiB // 8, dtype="f8")
    sf.put("first", [first], on_done=blocking)
    sf.put("second", [b"hdr", second], on_done=done)
    try:
        assert "second" in sf and sf.nbytes("second") == 3 + second.nbytes
        hdr, body = sf.get("second")
        assert as_bytes(hdr) == b"hdr" and as_bytes(body) == second.tobytes()
        pieces = list(sf.iter_frame_chunks("second", chunk=MiB))
        assert [i for i, _ in pieces] == [0, 1, 1]
        with pytest.raises(TimeoutError):
            sf.flush(timeout=0.05)
    finally:
        gate.set()
    assert done.wait("first") is None and done.wait("second") is None
    assert as_bytes(sf.get("second")[1]) == second.tobytes()


def test_delete_pending_value_reports_cancel(sf):
    gate = threading.Event()
    done = Done()

    def blocking(key, err):
        gate.wait(WAIT)
        done(key, err)

    sf.put("a", [b"a" * 5000], on_done=blocking)
    sf.put("b", [rng_bytes(2 * MiB)], on_done=done)
    sf.delete("b")
    assert "b" not in sf
    gate.set()
    err = done.wait("b")
    assert isinstance(err, SpillError) and err.errno == errno.ECANCELED
    sf.flush(WAIT)
    assert "b" not in sf and sf.keys() == ["a"]
    with pytest.raises(KeyError):
        sf.get("b")


def test_backpressure(tmp_path):
    done = Done()
    with SpillFile(str(tmp_path), max_pending_bytes=2 * MiB) as sf:
        data = rng_bytes(MiB)
        for i in range(20):
            sf.put(i, [data], on_done=done)
            assert sf.stats["pending"] <= 3
        sf.flush(WAIT)
        assert all(done.wait(i) is None for i in range(20))
        assert all(as_bytes(sf.get(i)[0]) == data for i in range(20))


# --- streaming ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1000, 4096, MiB, 64 * MiB])
def test_iter_frame_chunks(tmp_path, chunk):
    with SpillFile(str(tmp_path), block_size=MiB) as sf:
        frames = [b"head", rng_bytes(3 * MiB + 11, seed=5), np.arange(MiB // 2, dtype="f8"), b""]
        roundtrip(sf, "v", frames)
        got: dict = {}
        for i, piece in sf.iter_frame_chunks("v", chunk=chunk):
            assert 0 < memoryview(piece).nbytes <= chunk
            got.setdefault(i, []).append(as_bytes(piece))
        for i, f in enumerate(frames):
            assert b"".join(got.get(i, [])) == raw_bytes(f)


def test_map_frames_views_the_file_not_memory(tmp_path):
    with SpillFile(str(tmp_path), block_size=MiB) as sf:
        frames = [b"head", rng_bytes(3 * MiB + 11, seed=5), np.arange(MiB // 2, dtype="f8"), b""]
        roundtrip(sf, "v", frames)
        read_before = sf.stats["bytes_read"]
        got = sf.map_frames("v")
        assert [as_bytes(g) for g in got] == [raw_bytes(f) for f in frames]
        # the incompressible frame is a view of a mapping of the spill file, never read into memory
        assert isinstance(got[1], memoryview) and isinstance(got[1].obj, mmap.mmap)
        assert not isinstance(got[2], memoryview) or not isinstance(got[2].obj, mmap.mmap)  # decoded
        assert sf.stats["bytes_read"] == read_before
        assert sf.stats["bytes_mapped"] == sf._index["v"].length


def test_mapped_space_is_not_reused_until_the_views_are_gone(tmp_path):
    with SpillFile(str(tmp_path), compression="none") as sf:
        data = rng_bytes(2 * MiB, seed=9)
        roundtrip(sf, "a", [data])
        offset = sf._index["a"].offset
        views = sf.map_frames("a")
        sf.delete("a")
        roundtrip(sf, "b", [rng_bytes(2 * MiB, seed=10)])
        assert sf._index["b"].offset != offset  # the mapped extent is still taken
        assert as_bytes(views[0]) == data
        del views
        gc.collect()
        roundtrip(sf, "c", [rng_bytes(2 * MiB, seed=11)])
        assert sf._index["c"].offset == offset  # freed when the last view went


# --- integrity ----------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [rng_bytes(3 * MiB), np.arange(MiB, dtype="f8")], ids=["raw", "compressed"])
@pytest.mark.parametrize("where", [0, 4096 + 7, -1])
def test_checksum_mismatch_detected(sf, frame, where):
    roundtrip(sf, "victim", [b"h" * 100, frame])
    entry = sf._index["victim"]
    pos = entry.offset + (min(where, entry.length - 1) if where >= 0 else entry.length - 1)
    fd = os.open(sf.path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, pos)
        os.pwrite(fd, bytes([old[0] ^ 0x40]), pos)
        os.fsync(fd)
    finally:
        os.close(fd)
    with pytest.raises(ChecksumError, match="victim"):
        sf.get("victim")
    with pytest.raises(ChecksumError, match="victim"):
        for _ in sf.iter_frame_chunks("victim"):
            pass
    with pytest.raises(ChecksumError, match="victim"):
        sf.map_frames("victim")
    roundtrip(sf, "other", [b"still fine" * 1000])  # the file keeps working
    assert sf.map_frames("other")[0] == b"still fine" * 1000


def test_checksum_properties():
    data = bytearray(rng_bytes(64 * 1024 + 123))
    base = checksum(data)
    assert checksum(bytes(data)) == base == checksum(memoryview(data))
    flipped = bytearray(data)
    flipped[5000] ^= 1
    assert checksum(flipped) != base
    swapped = bytearray(data)
    swapped[0:4096], swapped[4096:8192] = data[4096:8192], data[0:4096]
    assert checksum(swapped) != base  # misplaced sectors are caught
    zeroed = bytearray(data)
    zeroed[8192:12288] = bytes(4096)
    assert checksum(zeroed) != base
    tail = bytearray(data)
    tail[-1] ^= 0x80
    assert checksum(tail) != base
    assert checksum(b"") != checksum(b"\0")
    big = np.frombuffer(rng_bytes(4 << 20), np.uint8)  # over 64 KiB: hashed without the GIL
    assert checksum(big) == checksum(big.tobytes()) != checksum(big[:-1])


# --- errors -------------------------------------------------------------------------------


@contextlib.contextmanager
def mounted(fstype: str, options: str):
    """A fresh mount of ``fstype`` (root only); skips the test where mounting is not allowed."""
    path = tempfile.mkdtemp(prefix="frisky-test-mnt-")
    try:
        res = subprocess.run(["mount", "-t", fstype, "-o", options, fstype, path], capture_output=True)
    except OSError:
        res = None
    if res is None or res.returncode:
        os.rmdir(path)
        pytest.skip(f"cannot mount {fstype} here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)
        os.rmdir(path)


def test_disk_full_reported_and_file_keeps_working():
    with mounted("tmpfs", "size=1m") as mnt, SpillFile(mnt, name="full") as sf:
        done = Done()
        big = rng_bytes(4 * MiB, seed=9)  # incompressible, larger than the whole filesystem
        sf.put("big", [big], on_done=done)
        err = done.wait("big")
        assert isinstance(err, SpillError) and err.errno == errno.ENOSPC
        assert "no space" in str(err) and "big" in str(err)
        assert "big" not in sf
        with pytest.raises(KeyError):
            sf.get("big")
        assert sf.stats["file_size"] == 0 and os.path.getsize(sf.path) == 0  # space given back
        small = rng_bytes(64 * 1024, seed=10)
        roundtrip(sf, "small", [small])


def test_unwritable_directory(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(SpillError, match=re.escape(str(missing))):
        SpillFile(str(missing))
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    with pytest.raises(SpillError, match="afile"):
        SpillFile(str(afile))
    if os.geteuid() == 0:  # root ignores permission bits: use a read-only mount instead
        with mounted("tmpfs", "ro,size=1m") as ro:
            with pytest.raises(SpillError, match=re.escape(ro)) as info:
                SpillFile(ro)
            assert info.value.errno == errno.EROFS
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(SpillError, match=re.escape(str(ro))):
            SpillFile(str(ro))


def test_closed_file_rejects_put(tmp_path):
    sf = SpillFile(str(tmp_path))
    sf.close()
    sf.close()  # idempotent
    with pytest.raises(SpillError, match="closed"):
        sf.put("x", [b"x"])
    with pytest.raises(SpillError, match="closed"):
        sf.get("x")


def test_close_cancels_queued_values(tmp_path):
    gate = threading.Event()
    done = Done()

    def blocking(key, err):
        gate.wait(WAIT)
        done(key, err)

    sf = SpillFile(str(tmp_path))
    sf.put("a", [b"a" * 100], on_done=blocking)
    sf.put("b", [rng_bytes(MiB)], on_done=done)
    closer = threading.Thread(target=sf.close)
    closer.start()
    gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    for key in "ab":  # each reported exactly once: written, or cancelled if close came first
        err = done.wait(key)
        assert err is None or err.errno == errno.ECANCELED
    assert sorted(done.calls) == ["a", "b"]
    assert not os.path.exists(sf.directory)


# --- space --------------------------------------------------------------------------------


def test_freed_space_is_reused(sf):
    data = rng_bytes(MiB, seed=4)
    biggest = 0
    for i in range(200):
        sf.put(f"v-{i}", [data])
        if i >= 2:
            sf.delete(f"v-{i - 2}")
        sf.flush(WAIT)
        biggest = max(biggest, sf.stats["file_size"], os.path.getsize(sf.path))
    assert biggest <= 4 * MiB, biggest
    for i in (198, 199):
        assert as_bytes(sf.get(f"v-{i}")[0]) == data
    sf.delete("v-198")
    sf.delete("v-199")
    assert sf.stats["file_size"] == 0 and os.path.getsize(sf.path) == 0
    with pytest.raises(KeyError):
        sf.delete("v-199")


def test_holes_are_filled_first_fit(sf):
    data = {i: rng_bytes((i % 3 + 1) * 100_000, seed=i) for i in range(12)}
    for i, d in data.items():
        sf.put(i, [d])
    sf.flush(WAIT)
    size = sf.stats["file_size"]
    for i in range(0, 12, 2):
        sf.delete(i)
    assert sf.stats["free_bytes"] > 0
    for i in range(0, 12, 2):
        sf.put(("again", i), [data[i]])
    sf.flush(WAIT)
    assert sf.stats["file_size"] == size  # the holes took them all
    for i in range(1, 12, 2):
        assert as_bytes(sf.get(i)[0]) == data[i]
    for i in range(0, 12, 2):
        assert as_bytes(sf.get(("again", i))[0]) == data[i]


def test_extents_coalesce():
    ex = Extents()
    offs = [ex.alloc(4096) for _ in range(5)]
    assert offs == [0, 4096, 8192, 12288, 16384] and ex.end == 20480
    assert not ex.free(4096, 4096)
    assert not ex.free(12288, 4096)
    assert not ex.free(8192, 4096)  # merges with both neighbours into one hole
    assert ex.starts == [4096] and ex.sizes == [12288]
    assert ex.alloc(8192) == 4096 and ex.starts == [12288]
    assert ex.free(16384, 4096)  # tail freed together with the hole before it: file shrinks
    assert ex.end == 12288 and ex.starts == []
    with pytest.raises(RuntimeError):
        ex.free(0, 4096) or ex.free(0, 4096)


# --- I/O modes ----------------------------------------------------------------------------


def test_direct_io_on_disk(sf):
    if os.uname().sysname != "Linux":
        pytest.skip("O_DIRECT is Linux-only here")
    assert sf.stats["direct"] is True
    roundtrip(sf, "d", [rng_bytes(5 * MiB + 1)])


def test_buffered_fallback_where_o_direct_is_refused():
    # ramfs refuses O_DIRECT (EINVAL) — as tmpfs did before Linux 6.6; newer tmpfs accepts it.
    with mounted("ramfs", "mode=0700") as mnt:
        with SpillFile(mnt) as sf:
            assert sf.stats["direct"] is False
            roundtrip(sf, "r", [rng_bytes(3 * MiB + 5), b"x"])
        with pytest.raises(SpillError, match="O_DIRECT"):
            SpillFile(mnt, direct=True)


def test_dev_shm_tmpfs_works():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    with SpillFile("/dev/shm", name="shmtest") as sf:
        roundtrip(sf, "t", [rng_bytes(2 * MiB + 3), np.arange(10_000.0)])
    with SpillFile("/dev/shm", name="shmtest", direct=False) as sf:
        assert sf.stats["direct"] is False
        roundtrip(sf, "t", [rng_bytes(2 * MiB + 3)])


def test_forced_buffered_on_disk(tmp_path):
    with SpillFile(str(tmp_path), direct=False) as sf:
        assert sf.stats["direct"] is False
        roundtrip(sf, "b", [rng_bytes(6 * MiB + 1), np.arange(MiB, dtype="f8")])


# --- lifetime -----------------------------------------------------------------------------


def test_private_directory_and_close(tmp_path):
    sf = SpillFile(str(tmp_path), name="w/1 x")
    d = sf.directory
    assert os.path.dirname(d) == str(tmp_path)
    assert os.path.basename(d).startswith(f"frisky-spill-w_1_x-{os.getpid()}-")
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert os.stat(sf.path).st_mode & 0o777 == 0o600
    roundtrip(sf, "x", [b"y" * 10_000])
    sf.close()
    assert not os.path.exists(d)
    assert sweep(str(tmp_path)) == 0


def test_sweep_removes_dead_owner(tmp_path):
    code = (
        "import sys, frisky.spill as s\n"
        "f = s.SpillFile(sys.argv[1], name='doomed')\n"
        "f.put('k', [b'z' * 100000]); f.flush(30)\n"
        "print(f.directory, flush=True)\n"
        "sys.stdin.read()\n"
    )
    import frisky.spill

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(frisky.spill.__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        dead_dir = child.stdout.readline().strip()
        assert dead_dir and os.path.isdir(dead_dir)
        live = SpillFile(str(tmp_path), name="alive")  # ours: must survive the sweep
        assert sweep(str(tmp_path)) == 0  # the child is still alive
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)
        child.stdin.close()
        child.stdout.close()
    try:
        (tmp_path / "frisky-spill-bogus-notapid-x").mkdir()  # not ours to judge
        assert sweep(str(tmp_path)) == 1
        assert not os.path.exists(dead_dir)
        assert os.path.isdir(live.directory)
        assert (tmp_path / "frisky-spill-bogus-notapid-x").is_dir()
    finally:
        live.close()


def test_telemetry_spans_and_counters(sf):
    before = dict(recorder.counters)
    n_write = recorder.totals.get("spill.write", [0, 0])[0]
    n_read = recorder.totals.get("spill.read", [0, 0])[0]
    roundtrip(sf, "inc-abc", [rng_bytes(100_000)])
    assert recorder.totals["spill.write"][0] == n_write + 1
    assert recorder.totals["spill.read"][0] == n_read + 1
    assert recorder.counters["spill.bytes_written"] - before.get("spill.bytes_written", 0) >= 100_000
    assert recorder.counters["spill.bytes_read"] - before.get("spill.bytes_read", 0) >= 100_000
    assert any(s[0] == "spill.write" and s[3] == "inc" for s in recorder.spans)
    st = sf.stats
    assert st["bytes_written"] >= 100_000 and st["bytes_read"] >= 100_000
    assert st["write_seconds"] > 0 and st["read_seconds"] > 0 and st["disk_free_bytes"] > 0


def test_concurrent_readers_writers_and_deletes(sf):
    data = {i: rng_bytes(MiB + i, seed=i) for i in range(16)}
    for i in range(8):
        sf.put(i, [data[i]])
    sf.flush(WAIT)
    errors: list = []

    def reader(i):
        try:
            for _ in range(5):
                assert as_bytes(sf.get(i)[0]) == data[i]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for i in range(4, 8):  # free space next to what the readers read, and write into it
        sf.delete(i)
        sf.put(i + 4, [data[i + 4]])
    for t in threads:
        t.join(WAIT)
    sf.flush(WAIT)
    assert not errors
    for i in (*range(4), *range(8, 12)):
        assert as_bytes(sf.get(i)[0]) == data[i]


def test_page_aligned_frames_written_in_place(sf):
    import mmap

    # Page-aligned memory (like a shared-memory segment) is written without a staging copy.
    seg = mmap.mmap(-1, 9 * MiB)
    arr = np.frombuffer(seg, dtype="u1")
    arr[:] = np.frombuffer(rng_bytes(9 * MiB, seed=11), dtype="u1")
    seg2 = mmap.mmap(-1, 5 * MiB + 4096)
    arr2 = np.frombuffer(seg2, dtype="u1")[:5 * MiB + 1000]
    arr2[:] = np.frombuffer(rng_bytes(5 * MiB + 1000, seed=12), dtype="u1")
    frames = [b"header" * 7, arr, b"mid", arr2, memoryview(seg)[:300_000]]
    roundtrip(sf, "aligned", frames)
    assert sf.stats["bytes_zero_copy"] >= 9 * MiB + 5 * MiB
    pieces: dict = {}
    for i, piece in sf.iter_frame_chunks("aligned", chunk=MiB):
        pieces.setdefault(i, []).append(as_bytes(piece))
    assert [b"".join(pieces.get(i, [])) for i in range(len(frames))] == [raw_bytes(f) for f in frames]
    del frames, arr, arr2


def test_random_operations_keep_index_and_space_consistent(tmp_path):
    import mmap
    import random

    rnd = random.Random(1234)
    seg = mmap.mmap(-1, 2 * MiB)  # page-aligned source for in-place writes
    seg[:] = rng_bytes(2 * MiB, seed=99)
    model: dict = {}
    done = Done()
    with SpillFile(str(tmp_path), block_size=MiB, max_pending_bytes=8 * MiB) as sf:
        for step in range(400):
            op = rnd.random()
            key = rnd.randrange(40)
            if op < 0.5:
                size = rnd.choice([0, 1, 100, 4096, 5000, 300_000, 1_500_000])
                kind = rnd.randrange(3)
                if kind == 0:
                    frame: object = rng_bytes(size, seed=step)
                elif kind == 1:
                    frame = np.arange(size // 8, dtype="f8")
                else:
                    frame = memoryview(seg)[: min(size, len(seg))]
                frames = [b"h%d" % step, frame]
                sf.put(key, frames, on_done=done)
                model[key] = [raw_bytes(f) for f in frames]
            elif op < 0.7 and key in model:
                sf.delete(key)
                del model[key]
            elif op < 0.95 and key in model:
                assert [as_bytes(f) for f in sf.get(key)] == model[key]
            else:
                sf.flush(WAIT)
                ex = sf._extents
                used = sum(e.extent for e in sf._index.values())
                assert used + ex.free_bytes == ex.end == sf.stats["file_size"]
                assert os.path.getsize(sf.path) == ex.end
        sf.flush(WAIT)
        assert set(sf.keys()) == set(model)
        for key, want in model.items():
            assert [as_bytes(f) for f in sf.get(key)] == want
        for key in list(model):
            sf.delete(key)
        assert sf.stats["file_size"] == 0
