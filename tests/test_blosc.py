"""blosc2 into caller-owned buffers: round trips, and chunks that blosc2 and our codecs share."""

from __future__ import annotations

import threading

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
