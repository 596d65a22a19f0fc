"""Shared memory between processes on a host; compressed frames over TCP."""

from __future__ import annotations

import glob
import os
import signal

import numpy as np
import pytest

import frisky

DTYPES = ["float64", "float32", "int64", "int8", "uint16", "complex128", "bool", "datetime64[ns]"]


def make(n, dtype="float64"):
    return np.arange(n).astype(dtype)


def first_writable(a):
    return bool(a.flags.writeable)


def try_write(a):
    try:
        a[0] = 1
    except ValueError:
        return "read-only"
    return "written"


def checksum(a):
    return float(np.asarray(a, dtype="float64").sum())


def identity(x):
    return x


def pid(*_):
    return os.getpid()


def segments(cluster_id):
    return glob.glob(f"/dev/shm/frisky-{cluster_id}-*")


@pytest.fixture(scope="module")
def pair(cluster):
    with cluster.get_client() as cl:
        a, b = sorted(cl.scheduler_info()["workers"])
        yield cluster, cl, a, b


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype_through_shared_memory(pair, dtype):
    c, cl, a, b = pair
    x = cl.submit(make, 100_000, dtype, workers=[a])
    expected = make(100_000, dtype)
    frisky.wait([x], timeout=20)
    if dtype != "datetime64[ns]":  # no buffer protocol for datetimes: pickled in band instead
        assert segments(c.cluster_id), "a large result lives in shared memory"
    got = cl.submit(identity, x, workers=[b], pure=False).result(timeout=20)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(x.result(timeout=20), expected)


def test_gather_is_a_read_only_view_and_consumers_cannot_corrupt_producers(pair):
    c, cl, a, b = pair
    x = cl.submit(make, 1_000_000, workers=[a])
    arr = x.result(timeout=20)
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr[0] = 42.0
    assert cl.submit(try_write, x, workers=[b], pure=False).result(timeout=20) == "read-only"
    assert cl.submit(checksum, x, workers=[a], pure=False).result(timeout=20) == float(sum(range(1_000_000)))


def test_objects_with_several_buffers_and_fallbacks(pair):
    c, cl, a, b = pair
    value = {
        "a": np.arange(50_000.0), "b": np.ones((300, 300), dtype="int32"),
        "t": np.arange(40_000.0)[::2],  # not contiguous: pickled in band
        "o": np.array([{"x": 1}, None, "s"] * 5000, dtype=object),  # object array: in band
        "raw": bytes(200_000), "ba": bytearray(b"x" * 100_000), "mv": memoryview(b"y" * 100_000),
    }
    x = cl.scatter(value)
    got = cl.submit(identity, x, workers=[b], pure=False).result(timeout=20)
    for k in ("a", "b", "t"):
        np.testing.assert_array_equal(got[k], value[k])
    assert list(got["o"]) == list(value["o"])
    assert bytes(got["raw"]) == value["raw"] and bytes(got["ba"]) == bytes(value["ba"])
    assert bytes(got["mv"]) == bytes(value["mv"])


def test_scatter_large_array_zero_copy_to_workers(pair):
    c, cl, a, b = pair
    data = np.random.default_rng(0).standard_normal(500_000)
    x = cl.scatter(data)
    assert cl.submit(checksum, x, pure=False).result(timeout=20) == pytest.approx(float(data.sum()))


def test_small_results_use_no_shared_memory(pair):
    c, cl, a, b = pair
    before = set(segments(c.cluster_id))
    xs = cl.map(make, [10] * 50, pure=False)
    assert cl.gather(cl.map(checksum, xs, pure=False)) == [45.0] * 50
    assert set(segments(c.cluster_id)) <= before


def test_consumer_view_survives_producer_kill():
    with frisky.LocalCluster(n_workers=2) as c, c.get_client() as cl:
        a, _ = sorted(cl.scheduler_info()["workers"])
        producer = cl.scheduler_info()["workers"][a]["pid"]
        x = cl.submit(make, 2_000_000, workers=[a])
        arr = x.result(timeout=20)  # a view of the producer's segment
        os.kill(producer, signal.SIGKILL)
        assert float(arr.sum()) == float(sum(range(2_000_000)))
        # the task is recomputed for new consumers: right answer, no crash
        assert cl.submit(checksum, x, pure=False).result(timeout=30) == float(sum(range(2_000_000)))
    assert not segments(c.cluster_id)


def test_forced_tcp_moves_and_compresses(tmp_path):
    with frisky.LocalCluster(n_workers=2, transport="tcp") as c, c.get_client() as cl:
        assert c.scheduler_address.startswith("tcp://127.0.0.1:")
        a, b = sorted(cl.scheduler_info()["workers"])
        assert a.startswith("tcp://")
        x = cl.submit(make, 1_000_000, workers=[a])  # compressible
        r = cl.submit(make, 1, workers=[a])
        y = cl.submit(np.random.default_rng(1).standard_normal, 500_000, workers=[a], pure=False)
        assert cl.submit(checksum, x, workers=[b], pure=False).result(timeout=20) == float(sum(range(1_000_000)))
        np.testing.assert_array_equal(x.result(timeout=20), make(1_000_000))
        assert cl.submit(checksum, y, workers=[b], pure=False).result(timeout=20) == pytest.approx(
            float(y.result(timeout=20).sum()))
        assert r.result(timeout=20).tolist() == [0.0]
        assert not segments(c.cluster_id), "no shared memory over TCP"


def test_whole_cluster_killed_then_swept():
    from frisky import shm

    c = frisky.LocalCluster(n_workers=2)
    cl = c.get_client()
    x = cl.submit(make, 1_000_000)
    x.result(timeout=20)
    assert segments(c.cluster_id)
    c.restart_workers = False  # the whole cluster dies: no replacements
    procs = list(c.workers.values()) + [c._scheduler_proc]
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait(10)
    cl.close()
    c.close()  # sweeps what the dead processes left
    assert not segments(c.cluster_id)
    assert shm.sweep() >= 0


# ------------------------------------------------------- large buffers streamed over TCP

STREAM_N = 3 * (1 << 20) + 5  # several chunks and a ragged end, past the streaming threshold


def make_streamable(kind):
    """Values whose buffers are large enough to be streamed, in every awkward shape."""
    n = STREAM_N
    if kind == "pair":  # one compressible and one incompressible buffer in one value
        return {"a": np.arange(n // 8, dtype="f8"), "r": np.random.default_rng(5).standard_normal(n // 8)}
    if kind == "strided":  # not contiguous: pickled in band
        return np.arange(n // 4, dtype="f8")[::2]
    if kind == "record":  # itemsize 12: chunks cut on items, not on powers of two
        return np.zeros(n // 12, dtype=[("x", "<i8"), ("y", "<f4")])
    if kind == "empty":
        return np.arange(0, dtype="f8")
    return np.arange(n // np.dtype(kind).itemsize).astype(kind)


def same(kind, value):
    expected = make_streamable(kind)
    if kind == "pair":
        return all(np.array_equal(value[k], expected[k]) for k in expected)
    return value.dtype == expected.dtype and np.array_equal(value, expected)


def both(x, y):
    return float(np.asarray(x).sum() + np.asarray(y).sum())


@pytest.fixture(scope="module")
def tcp_pair():
    with frisky.LocalCluster(n_workers=2, transport="tcp") as c, c.get_client() as cl:
        a, b = sorted(cl.scheduler_info()["workers"])
        yield cl, a, b


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [*DTYPES, "int16", "pair", "strided", "record", "empty"])
def test_streamed_round_trip_between_workers(tcp_pair, kind):
    cl, a, b = tcp_pair
    x = cl.submit(make_streamable, kind, workers=[a], pure=False)
    assert cl.submit(same, kind, x, workers=[b], pure=False).result(timeout=30)


@pytest.mark.timeout(60)
def test_several_streamed_values_in_one_reply(tcp_pair):
    cl, a, b = tcp_pair
    x = cl.submit(make_streamable, "float64", workers=[a], pure=False)
    y = cl.submit(make_streamable, "int64", workers=[a], pure=False)
    frisky.wait([x, y])
    expected = float(make_streamable("float64").sum() + make_streamable("int64").sum())
    assert cl.submit(both, x, y, workers=[b], pure=False).result(timeout=30) == expected


def random_floats(n):
    return np.random.default_rng(7).random(n)


@pytest.mark.timeout(90)
def test_producer_killed_while_streaming_over_tcp_leaves_a_right_answer():
    from frisky import protocol

    n = 128 * (1 << 20) // 8  # long enough that the kill can land mid-stream
    expected = checksum(random_floats(n))
    with frisky.LocalCluster(n_workers=2, transport="tcp") as c, c.get_client() as cl:
        x = cl.submit(random_floats, n, pure=False)
        frisky.wait([x], timeout=30)
        holder = cl._query(protocol.WHERE, [x._wkey], cl._token)[0]
        workers = cl.scheduler_info()["workers"]
        other = next(a for a in workers if a != holder)
        y = cl.submit(checksum, x, workers=[other], pure=False)
        os.kill(workers[holder]["pid"], signal.SIGKILL)
        # before, during or after the stream: recomputed or received, never wrong, no hang
        assert y.result(timeout=60) == expected


@pytest.mark.timeout(90)
def test_value_restricted_by_worker_name_is_recomputed_on_its_replacement_over_tcp():
    n = 16 * (1 << 20) // 8
    expected = checksum(random_floats(n))
    with frisky.LocalCluster(n_workers=2, transport="tcp") as c, c.get_client() as cl:
        by_name = {w["name"]: w for w in cl.scheduler_info()["workers"].values()}
        x = cl.submit(random_floats, n, workers=["0"], pure=False)  # names, as dask allows
        frisky.wait([x], timeout=30)
        y = cl.submit(checksum, x, workers=["1"], pure=False)
        os.kill(by_name["0"]["pid"], signal.SIGKILL)
        # the replacement worker "0" listens on a new port; x is recomputed there and
        # worker "1" fetches it from the new address, not the dead one
        assert y.result(timeout=60) == expected


def test_encode_streams_large_buffers_compressed_only_when_it_pays():
    from frisky.data import compression, dataplane

    value = make_streamable("pair")
    frames = dataplane.dumps(value)
    streams = []
    descs, out = dataplane.encode(frames, same_host=False, prefer="lz4", streams=streams)
    assert [d[0] for d in descs] == [dataplane.RAW, dataplane.STREAMED, dataplane.STREAMED]
    assert len(out) == 1  # only the pickle stream travels in the reply itself
    (_, arange_codec, _), (_, random_codec, _) = streams
    assert arange_codec != compression.NONE and random_codec == compression.NONE
    # the random buffer's chunks are the very memory of the array, never compressed or copied
    step = compression.stream_chunk(8, value["r"].nbytes, compression.NONE)
    random_chunks = list(dataplane.chunks(streams[1:]))
    assert len(random_chunks) == -(-value["r"].nbytes // step)
    assert all(np.shares_memory(np.frombuffer(c, np.uint8), value["r"]) for c in random_chunks)
    assert b"".join(bytes(c) for c in random_chunks) == value["r"].tobytes()


def test_incoming_rebuilds_values_and_stays_in_step_after_a_corrupt_chunk():
    from frisky.data import dataplane
    from frisky.telemetry import recorder

    before = {k: v[0] for k, v in recorder.totals.items()}
    value = make_streamable("pair")
    frames = dataplane.dumps(value)
    streams = []
    descs, out = dataplane.encode(frames, same_host=False, prefer="lz4", streams=streams)
    chunks = list(dataplane.chunks(streams))
    assert len(chunks) > 2
    good = dataplane.Incoming(["k"], [descs], out)
    assert [good.feed(ch) for ch in chunks] == [False] * (len(chunks) - 1) + [True]
    assert same("pair", good.values()["k"])
    grew = {k: recorder.totals[k][0] - before.get(k, 0) for k in
            ("tcp.send.compress", "tcp.send.raw", "tcp.recv.decompress", "tcp.recv.copy")}
    # the arange's chunks were compressed, the random buffer's sent as they are
    assert grew["tcp.send.compress"] > 0 and grew["tcp.send.raw"] > 0
    assert grew["tcp.send.compress"] + grew["tcp.send.raw"] == len(chunks)
    assert grew["tcp.recv.decompress"] == 1 and grew["tcp.recv.copy"] == 1
    assert recorder.totals["tcp.send.choose"][0] > before.get("tcp.send.choose", 0)

    bad = dataplane.Incoming(["k"], [descs], out)
    broken = [chunks[0], b"\x00" * 100, *chunks[2:]]
    assert [bad.feed(ch) for ch in broken][-1] is True  # every message still counted
    with pytest.raises(ValueError):
        bad.values()

    short = dataplane.Incoming(["k"], [descs], out)
    cut = [*chunks[:-1], bytes(chunks[-1])[:-8]]  # the random buffer's last, uncompressed chunk
    assert [short.feed(ch) for ch in cut][-1] is True
    with pytest.raises(ValueError, match="raw chunk"):
        short.values()
