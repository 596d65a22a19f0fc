"""blosc2 into caller-owned buffers: round trips, and chunks that blosc2 and our codecs share."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import blosc2
import numpy as np
import pytest

from frisky.data import blosc, compression

pytestmark = pytest.mark.skipif(not blosc.available(), reason="the blosc2 C library is not loadable")

MiB = 1 << 20


def compress(src, base=compression.LZ4, typesize=8) -> bytes:
    out = np.empty(memoryview(src).nbytes + blosc.OVERHEAD, np.uint8)
    return out[:blosc.compress_into(src, out, base, typesize)].tobytes()


@pytest.mark.parametrize("base", [compression.LZ4, compression.ZSTD])
@pytest.mark.parametrize("data", [np.arange(MiB, dtype="f8"), np.random.default_rng(0).random(MiB // 8),
                                  np.arange(1001, dtype="u1"), b"x"], ids=["arange", "random", "odd", "one"])
def test_roundtrip_and_interop(base, data):
    raw = memoryview(data).cast("B")
    packed = compress(data, base)
    out = np.empty(raw.nbytes, np.uint8)
    assert blosc.decompress_into(packed, out) == raw.nbytes
    assert out.tobytes() == raw.tobytes()
    # ordinary blosc2 chunks: the module and the TCP codec path read them
    assert blosc2.decompress(packed) == raw.tobytes()
    codec = base | compression.SHUFFLE | compression.BLOSC
    assert bytes(compression.decompress(packed, codec, raw.nbytes, 8)) == raw.tobytes()


def test_reads_what_blosc2_wrote():
    data = np.arange(MiB, dtype="f8")
    packed = blosc2.compress(data, typesize=8, clevel=1, codec=blosc2.Codec.ZSTD)
    out = np.empty(data.nbytes, np.uint8)
    blosc.decompress_into(packed, out)
    np.testing.assert_array_equal(out.view("f8"), data)


def test_compressible_data_shrinks_and_random_does_not_grow_much():
    a = np.arange(MiB, dtype="f8")
    assert len(compress(a)) < a.nbytes // 20
    r = np.random.default_rng(1).random(MiB)
    assert len(compress(r)) <= r.nbytes + blosc.OVERHEAD


def test_corrupt_or_wrong_size_raises():
    packed = bytearray(compress(np.arange(MiB, dtype="f8")))
    with pytest.raises(ValueError):
        blosc.decompress_into(bytes(packed), np.empty(MiB * 8 - 1, np.uint8))  # not its size
    packed[:16] = b"\xff" * 16
    with pytest.raises(ValueError):
        blosc.decompress_into(bytes(packed), np.empty(MiB * 8, np.uint8))


def test_output_too_small_raises():
    with pytest.raises(ValueError):
        blosc.compress_into(np.random.default_rng(2).random(MiB // 8), np.empty(1000, np.uint8),
                            compression.LZ4, 8)


@pytest.mark.timeout(60)
def test_threads_mixing_codecs_get_what_they_asked_for():
    data = np.arange(2 * MiB, dtype="f8")
    errors: list = []

    def work(base):
        try:
            for _ in range(20):
                packed = compress(data, base)
                # header byte 2 carries the format of the codec that wrote the chunk (1 lz4, 4 zstd) in its
                # top three bits; byte 3 the typesize
                assert packed[2] >> 5 == (1 if base == compression.LZ4 else 4)
                assert packed[3] == 8
                assert blosc2.decompress(packed) == data.tobytes()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(b,)) for b in (compression.LZ4, compression.ZSTD) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert not errors, errors


@pytest.mark.timeout(120)
def test_spill_and_tcp_compress_at_the_same_time():
    """A spill-sized chunk and TCP stream chunks compress concurrently: stream chunks start and
    finish in the middle of one long spill call (with a process-wide lock none could)."""
    big = np.arange(32 * MiB // 8, dtype="f8") * 1.0001  # the spill writer's chunk: slow at level 6
    small = np.arange(64 * 1024 // 8, dtype="f8")  # one TCP stream chunk
    big_out = np.empty(big.nbytes + blosc.OVERHEAD, np.uint8)
    small_out = np.empty(small.nbytes + blosc.OVERHEAD, np.uint8)
    blosc.compress_into(small, small_out, compression.LZ4, 8, nthreads=1)  # contexts made up front
    started, spill_done = threading.Event(), threading.Event()
    spill: list[float] = []
    tcp: list[tuple[float, float]] = []

    def spill_writer():
        for _ in range(10):  # one call shows it, unless a loaded machine starves the stream thread
            spill.clear()
            t0 = time.perf_counter()
            started.set()
            blosc.compress_into(big, big_out, compression.ZSTD, 8, clevel=6, nthreads=1)
            spill[:] = [t0, time.perf_counter()]
            if _overlaps():
                break
        spill_done.set()

    def tcp_stream():
        started.wait(30)
        while not spill_done.is_set():
            t0 = time.perf_counter()
            blosc.compress_into(small, small_out, compression.LZ4, 8, nthreads=1)
            tcp.append((t0, time.perf_counter()))

    def _overlaps() -> bool:
        a, b = spill
        quarter = (b - a) / 4  # the middle half: the spill call is surely inside the library there
        return any(a + quarter < s and e < b - quarter for s, e in list(tcp))

    threads = [threading.Thread(target=spill_writer), threading.Thread(target=tcp_stream)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert spill and _overlaps(), f"no stream chunk was compressed during a {spill[1] - spill[0]:.2f} s spill call"


def test_compressing_does_not_import_the_blosc2_package():
    # `import blosc2` costs ~30 MiB of RSS in every worker that spills or sends over TCP;
    # the C library alone does the work.
    code = ("import sys, numpy as np\n"
            "from frisky.data import compression as c\n"
            "a = np.full(1 << 20, 3.0)\n"
            "codec = c.choose(a, 8)\n"
            "assert codec != c.NONE\n"
            "out = c.decompress(c.compress(a, codec, 8), codec, a.nbytes, 8)\n"
            "assert bytes(out) == a.tobytes()\n"
            "print('blosc2' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_small_buffer_does_not_shrink_the_blocks_of_later_ones():
    # blosc2 keeps a context's first block size for good: a 1.6 kB buffer compressed first
    # would leave every later chunk on that thread cut into 1.6 kB blocks (38x larger output).
    big = np.arange(MiB, dtype="i8")
    sizes = {}

    def on_a_new_thread():
        sizes["alone"] = len(compress(big))

    t = threading.Thread(target=on_a_new_thread)
    t.start()
    t.join()
    for _ in range(2):
        compress(np.arange(200, dtype="i8"))
        sizes["after small"] = len(compress(big))
        assert sizes["after small"] == sizes["alone"], sizes
