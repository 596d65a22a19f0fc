"""Codecs, byteshuffle and the sampling choice in frisky.data.compression."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from frisky.data import compression as c
from frisky.telemetry import recorder

CODECS = [c.NONE, c.LZ4, c.ZSTD, c.LZ4 | c.SHUFFLE, c.ZSTD | c.SHUFFLE,
          c.LZ4 | c.SHUFFLE | c.BLOSC, c.ZSTD | c.SHUFFLE | c.BLOSC]


def plain(codec: int) -> int:
    """The codec without the blosc2 flag (set on every codec choose() returns)."""
    return codec & ~c.BLOSC
# Odd lengths, the 1 KiB boundary, one chunk exactly, and several chunks with a ragged end.
LENGTHS = [0, 1, 7, 1023, 1024, 4097, 70_001, c.CHUNK, 2 * c.CHUNK + 13]


@pytest.fixture(autouse=True)
def _auto_compression(monkeypatch):
    # A developer's FRISKY_COMPRESSION must not change what these tests expect.
    monkeypatch.delenv("FRISKY_COMPRESSION", raising=False)


def _data(n: int, seed: int = 0) -> bytes:
    """Half compressible, half random, so codecs and shuffles all have real work."""
    rng = np.random.default_rng(seed)
    half = n // 2
    return (np.arange(half, dtype=np.uint8) % 17).tobytes() + rng.bytes(n - half)


def _roundtrip(buf, codec: int, itemsize: int) -> None:
    expected = np.ascontiguousarray(buf).tobytes() if isinstance(buf, np.ndarray) else bytes(buf)
    payload = c.compress(buf, codec, itemsize)
    out = c.decompress(payload, codec, len(expected), itemsize)
    assert bytes(out) == expected


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_roundtrip_byte_buffers(codec, n, kind):
    raw = _data(n)
    buf = {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw)}[kind]
    for itemsize in (1, 2, 8, 12):  # lengths are mostly not multiples: tails stay unshuffled
        _roundtrip(buf, codec, itemsize)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("dtype", ["u1", "i2", "f4", "f8", ">f8", "c16", "M8[ns]", "i4,f8"])
@pytest.mark.parametrize("count", [0, 1, 3, 999, 300_001])
def test_roundtrip_numpy(codec, dtype, count):
    arr = np.frombuffer(_data(count * np.dtype(dtype).itemsize, seed=count), dtype=dtype)
    _roundtrip(arr, codec, arr.itemsize)


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip_multidimensional_and_strided(codec):
    arr = np.arange(3 * 50_000, dtype="f4").reshape(3, 50_000)
    mv = memoryview(arr)  # 2-D, format 'f'
    assert bytes(c.decompress(c.compress(mv, codec, 4), codec, arr.nbytes, 4)) == arr.tobytes()
    _roundtrip(arr.T, codec, 4)  # Fortran order: copied contiguous first
    _roundtrip(arr[:, ::3], codec, 4)  # non-contiguous


def test_none_is_zero_copy():
    raw = bytearray(_data(10_000))
    out = c.compress(raw, c.NONE)
    assert isinstance(out, memoryview) and out.obj is raw
    arr = np.arange(10_000, dtype="f8")
    out = c.compress(arr, c.NONE, 8)
    assert np.shares_memory(np.frombuffer(out, np.uint8), arr)
    assert c.decompress(out, c.NONE, arr.nbytes, 8).obj is out.obj


def test_random_data_is_not_compressed():
    assert c.choose(os.urandom(1 << 20)) == c.NONE
    rng = np.random.default_rng(1)
    for arr in (rng.random(1 << 20), rng.standard_normal(1 << 20), rng.random(1000)):
        for prefer in ("lz4", "zstd"):
            assert c.choose(arr, 8, prefer) == c.NONE
            codec, payload = c.encode(arr, 8, prefer)
            assert codec == c.NONE and np.shares_memory(np.frombuffer(payload, np.uint8), arr)


@pytest.mark.parametrize("prefer, base", [("lz4", c.LZ4), ("zstd", c.ZSTD)])
def test_arange_is_compressed_with_shuffle(prefer, base):
    arr = np.arange(1 << 20, dtype="f8")
    codec = c.choose(arr, 8, prefer)
    assert plain(codec) == base | c.SHUFFLE
    codec, payload = c.encode(arr, 8, prefer)
    assert plain(codec) == base | c.SHUFFLE
    assert arr.nbytes / len(payload) > 2
    out = c.decode(codec, payload, arr.nbytes, 8)
    assert np.array_equal(np.frombuffer(out, "f8"), arr)


def test_arange_without_itemsize_uses_plain_codec():
    arr = np.arange(1 << 18, dtype="f8")
    assert plain(c.choose(arr)) == c.LZ4  # itemsize 1: no shuffle to try
    assert plain(c.choose(arr, 8)) == c.LZ4 | c.SHUFFLE


def test_small_buffers_are_not_compressed():
    assert c.choose(b"\0" * 1023) == c.NONE
    assert plain(c.choose(b"\0" * 1024)) == c.LZ4
    codec, payload = c.encode(b"\0" * 100)
    assert codec == c.NONE and bytes(payload) == b"\0" * 100


def test_small_whole_buffer_payload_matches_compress():
    # encode() reuses the compressed sample when the sample is the whole buffer.
    arr = np.arange(10_000, dtype="i8")
    codec, payload = c.encode(arr, 8)
    assert plain(codec) == c.LZ4 | c.SHUFFLE
    assert bytes(payload) == bytes(c.compress(arr, codec, 8))


def test_setting_maps_to_a_preference_once(monkeypatch):
    # The setting is resolved by callers when they are created; choose() never reads it.
    assert c.preference("auto") == "lz4" and c.preference("auto", "zstd") == "zstd"
    assert c.preference("zstd", "lz4") == "zstd" and c.preference("LZ4", "zstd") == "lz4"
    assert c.preference("none") is None
    with pytest.raises(ValueError):
        c.preference("gzip")
    monkeypatch.setenv("FRISKY_COMPRESSION", "none")
    assert c.preference() is None
    monkeypatch.setenv("FRISKY_COMPRESSION", "zstd")
    assert c.preference() == "zstd"
    arr = np.arange(1 << 16, dtype="f8")
    assert c.choose(arr, 8, "lz4") & 3 == c.LZ4  # the environment is not read per buffer
    assert c.choose(arr, 8, "zstd") & 3 == c.ZSTD
    assert c.choose(os.urandom(1 << 16), 1, "zstd") == c.NONE  # a named codec still has to pay


def test_spill_file_reads_the_setting_at_creation(monkeypatch, tmp_path):
    from frisky.spill.file import SpillFile

    monkeypatch.setenv("FRISKY_COMPRESSION", "gzip")
    with pytest.raises(ValueError, match="gzip"):
        SpillFile(str(tmp_path))
    monkeypatch.setenv("FRISKY_COMPRESSION", "none")
    f = SpillFile(str(tmp_path))
    try:
        monkeypatch.delenv("FRISKY_COMPRESSION")  # too late: the file read it when made
        f.put("k", [np.zeros(1 << 20)])
        f.flush()
        assert f.stats["bytes_written"] >= 1 << 20  # zeros stored raw: "none" held
    finally:
        f.close()


def test_bad_arguments():
    with pytest.raises(ValueError):
        c.choose(b"x" * 2000, prefer="gzip")
    with pytest.raises(ValueError):
        c.compress(b"x", c.SHUFFLE)  # NONE | SHUFFLE is not a codec
    with pytest.raises(ValueError):
        c.compress(b"x", c.LZ4, itemsize=0)


def test_corrupt_payloads_raise_value_error():
    raw = _data(3 * c.CHUNK)
    for codec in (c.LZ4, c.ZSTD, c.LZ4 | c.SHUFFLE):
        payload = bytes(c.compress(raw, codec, 8))
        with pytest.raises(ValueError):
            c.decompress(payload[:-10], codec, len(raw), 8)
        with pytest.raises(ValueError):
            c.decompress(payload, codec, len(raw) + 1, 8)
        small = bytes(c.compress(raw[:5000], codec, 8))
        with pytest.raises(ValueError):
            c.decompress(small[: len(small) // 2], codec, 5000, 8)
    with pytest.raises(ValueError):
        c.decompress(b"abc", c.NONE, 4)


def test_encode_falls_back_when_samples_mislead():
    n = 4 << 20
    buf = bytearray(np.random.default_rng(2).bytes(n))
    size = c.SAMPLE
    for start in (0, (n - size) // 2, n - size):  # where choose() samples: make those zeros
        buf[start : start + size] = bytes(size)
    assert plain(c.choose(buf)) == c.LZ4
    codec, payload = c.encode(buf)
    assert codec == c.NONE and payload.obj is buf


def test_choice_cost_is_independent_of_size():
    lazy = np.zeros(256 << 20, dtype="f8")  # untouched pages: sampling must not read them all
    noise = np.random.default_rng(3).random(4 << 20)
    for arr in (lazy, noise):
        for prefer in ("lz4", "zstd"):
            best = min(_timed(c.choose, arr, 8, prefer) for _ in range(3))
            assert best < 0.05, f"choose took {best * 1e3:.1f} ms"


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def test_spans_recorded():
    before = {k: v[0] for k, v in recorder.totals.items()}
    arr = np.arange(1 << 16, dtype="f8")
    codec, payload = c.encode(arr, 8)
    c.decode(codec, payload, arr.nbytes, 8)
    for name in ("tcp.send.compress", "tcp.recv.decompress"):
        assert recorder.totals[name][0] == before.get(name, 0) + 1


# ------------------------------------------------------------------ streamed chunks

STREAM_CODECS = [c.NONE, c.LZ4, c.ZSTD, c.LZ4 | c.SHUFFLE, c.ZSTD | c.SHUFFLE,
                 c.LZ4 | c.SHUFFLE | c.BLOSC, c.ZSTD | c.SHUFFLE | c.BLOSC]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("codec", STREAM_CODECS)
@pytest.mark.parametrize("itemsize", [1, 3, 8])
def test_chunks_round_trip_into_place(codec, itemsize):
    # a ragged last chunk, and a chunk size that is not a multiple of every itemsize
    data = np.frombuffer(_data(2 * c.stream_chunk(itemsize) + 13), np.uint8)
    step = c.stream_chunk(itemsize)
    assert step % itemsize == 0
    out = memoryview(np.empty(len(data), np.uint8))
    for off in range(0, len(data), step):
        piece = memoryview(data)[off:off + step]
        payload = c.compress_chunk(piece, codec, itemsize)
        assert len(payload) <= len(piece)
        c.decompress_chunk(payload, codec, out[off:off + len(piece)], itemsize)
    assert bytes(out) == data.tobytes()


@pytest.mark.timeout(60)
def test_incompressible_chunk_travels_raw_without_copy():
    piece = memoryview(np.random.default_rng(3).bytes(c.STREAM_CHUNK))
    payload = c.compress_chunk(piece, c.LZ4 | c.SHUFFLE | c.BLOSC, 8)
    assert payload is piece
    out = memoryview(bytearray(len(piece)))
    c.decompress_chunk(payload, c.LZ4 | c.SHUFFLE | c.BLOSC, out, 8)
    assert out == piece


@pytest.mark.timeout(60)
@pytest.mark.parametrize("codec", [c.LZ4, c.LZ4 | c.SHUFFLE | c.BLOSC, c.ZSTD | c.SHUFFLE | c.BLOSC])
def test_corrupt_or_mis_sized_chunks_raise_value_error(codec):
    piece = memoryview(np.arange(c.STREAM_CHUNK // 8, dtype="f8")).cast("B")
    payload = bytes(c.compress_chunk(piece, codec, 8))
    assert len(payload) < len(piece)
    with pytest.raises(ValueError):  # the destination is not the chunk's size
        c.decompress_chunk(payload, codec, memoryview(bytearray(len(piece) // 2)), 8)
    with pytest.raises(ValueError):  # truncated
        c.decompress_chunk(payload[: len(payload) // 2], codec, memoryview(bytearray(len(piece))), 8)
    with pytest.raises(ValueError):  # a raw chunk of the wrong size for codec NONE
        c.decompress_chunk(b"abc", c.NONE, memoryview(bytearray(8)), 1)


@pytest.mark.timeout(60)
def test_decompress_blosc_returns_writable_buffer_of_right_size():
    a = np.arange(100_000, dtype="f8")
    codec = c.choose(a, 8)
    assert codec & c.BLOSC
    out = c.decompress(c.compress(a, codec, 8), codec, a.nbytes, 8)
    np.testing.assert_array_equal(np.frombuffer(out, "f8"), a)
