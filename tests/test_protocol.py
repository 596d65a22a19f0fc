"""protocol.py: every named message round-trips, and anything malformed raises ProtocolError only."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frisky import protocol as p

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

key = st.text(max_size=12)
keys = st.lists(key, max_size=6)
ident = st.integers(min_value=0, max_value=2**40)
blob = st.binary(max_size=24)
fid = st.binary(min_size=16, max_size=16)


@st.composite
def submits(draw):
    ks = draw(keys)
    n = len(ks)
    fids = draw(st.lists(fid, min_size=1, max_size=3))
    if draw(st.booleans()):
        fidx = draw(st.integers(0, len(fids) - 1))
    else:
        fidx = draw(st.lists(st.integers(0, len(fids) - 1), min_size=n, max_size=n))
    deps = draw(st.none() | st.lists(st.none() | keys, min_size=n, max_size=n))
    per_task = st.integers(-5, 5) | st.lists(st.integers(-5, 5), min_size=n, max_size=n)
    return p.Submit(ks, fidx, fids, deps, draw(per_task), draw(per_task), draw(st.none() | keys),
                    draw(st.booleans()), draw(st.none() | keys), draw(st.lists(blob, min_size=n, max_size=n)),
                    draw(st.lists(blob, min_size=len(fids), max_size=len(fids))))


descriptor = st.one_of(
    st.just([p.RAW]),
    st.tuples(st.just(p.SHM), key, st.integers(0, 2**40)).map(list),
    st.tuples(st.just(p.PACKED), st.integers(0, 9), st.integers(0, 2**40), st.integers(1, 16)).map(list),
)


def _frames_for(descs_all):
    n = 0
    for descs in descs_all:
        n += 1 if descs is None else sum(1 for d in descs if d[0] in (p.RAW, p.PACKED))
    return [b"x"] * n


@st.composite
def scatters(draw):
    ks = draw(keys)
    descs = draw(st.lists(st.none() | st.lists(descriptor, min_size=1, max_size=3), min_size=len(ks),
                          max_size=len(ks)))
    return p.Scatter(ks, descs, draw(st.none() | keys), _frames_for(descs))


@st.composite
def finisheds(draw):
    tids = draw(st.lists(ident, max_size=6))
    n = len(tids)
    timings = draw(st.lists(st.tuples(fid, st.integers(1, 100), st.floats(0, 1e6)).map(list), max_size=2))
    refs = draw(st.none() | st.dictionaries(st.sampled_from(tids), blob, min_size=1) if tids else st.none())
    return p.Finished(tids, draw(st.lists(ident, min_size=n, max_size=n)), timings,
                      draw(st.lists(st.none() | blob, min_size=n, max_size=n)), refs)


@st.composite
def task_erreds(draw):
    tids = draw(st.lists(ident, max_size=6))
    n = len(tids)
    return p.TaskErred(tids, draw(st.lists(st.text(max_size=8), min_size=n, max_size=n)),
                       draw(st.lists(blob, min_size=n, max_size=n)))


@st.composite
def computes(draw):
    s = draw(submits())
    n = len(s.keys)
    tids = draw(st.lists(ident, min_size=n, max_size=n))
    where = draw(st.dictionaries(key, st.tuples(key, ident).map(list) | st.tuples(key, ident, blob).map(list),
                                 max_size=3))
    inline = draw(st.dictionaries(key, blob, max_size=3))
    return p.Compute(tids, s.keys, s.fidx, s.fids, s.deps, where, s.payloads, s.fn_blobs, inline)


@st.composite
def stores(draw):
    ks = draw(keys)
    descs = draw(st.lists(st.lists(descriptor, min_size=1, max_size=3), min_size=len(ks), max_size=len(ks)))
    return p.Store(draw(st.lists(ident, min_size=len(ks), max_size=len(ks))), ks, descs, _frames_for(descs))


@st.composite
def results(draw):
    ks = draw(keys)
    held = st.tuples(key, blob).map(list)  # [holder address, same-host reference]
    return p.Results(ks, draw(st.lists(blob | key | held, min_size=len(ks), max_size=len(ks))))


@st.composite
def erreds(draw):
    ks = draw(keys)
    n = len(ks)
    exc = blob | st.tuples(key, key).map(list)
    return p.Erred(ks, draw(st.lists(key, min_size=n, max_size=n)), draw(st.lists(exc, min_size=n, max_size=n)))


@st.composite
def datas(draw):
    ks = draw(keys)
    streamed = st.tuples(st.just(p.STREAMED), st.integers(0, 9), st.integers(0, 2**40),
                         st.integers(1, 16)).map(list)
    descs = draw(st.lists(st.lists(descriptor | streamed, min_size=1, max_size=3), min_size=len(ks),
                          max_size=len(ks)))
    return p.Data(draw(ident), ks, descs, draw(keys), _frames_for(descs))


hello_info = st.fixed_dictionaries({
    "address": key.map(lambda s: "tcp://" + s), "name": key, "nthreads": st.integers(1, 64),
    "memory_limit": st.none() | ident, "pid": st.none() | ident, "host": st.none() | key,
})

FROM_CLIENT = st.one_of(
    submits(), scatters(),
    st.builds(p.HelloClient, key), st.builds(p.HelloWorker, hello_info),
    st.builds(p.Where, ident, keys, st.none() | key), st.builds(p.Info, ident),
    st.builds(p.WaitWorkers, ident, ident, st.floats(0, 1e6) | st.integers(0, 10**6)),
    st.builds(p.Release, keys), st.builds(p.Cancel, keys), st.builds(p.CancelQueued, ident, keys),
    st.just(p.Heartbeat()), st.just(p.Bye()),
    st.builds(p.Activity, st.sampled_from(p.ACTIVITY_KINDS), ident, ident, st.text(max_size=20)),
)
FROM_WORKER = st.one_of(
    finisheds(), task_erreds(), st.builds(p.Cancelled, st.lists(ident, max_size=5)),
    st.builds(p.Missing, ident, keys), st.builds(p.WorkerHeartbeat, st.dictionaries(key, ident, max_size=3)),
    st.just(p.Bye()),
)
TO_CLIENT = st.one_of(
    st.builds(p.Welcome, ident, key, st.dictionaries(key, ident, max_size=2)), st.builds(p.Running, keys),
    results(), erreds(), st.builds(p.Reply, st.integers(-1, 10**6), st.none() | st.booleans() | keys),
    st.just(p.Heartbeat()), st.just(p.Close()),
)
TO_WORKER = st.one_of(
    computes(), stores(), st.builds(p.Free, keys), st.builds(p.CancelTasks, st.lists(ident, max_size=5)),
    st.builds(p.Welcome, ident, key, st.dictionaries(key, ident, max_size=2)), st.just(p.Heartbeat()),
    st.just(p.Close()),
)
GETS = st.builds(p.Get, ident, keys, st.booleans(), st.booleans(),
                 st.none() | st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)).map(list))
BULKS = st.builds(p.Bulk, ident, st.integers(1, 65535))

DIRECTIONS = [
    (p.parse_from_client, FROM_CLIENT), (p.parse_from_worker, FROM_WORKER), (p.parse_to_client, TO_CLIENT),
    (p.parse_to_worker, TO_WORKER), (p.parse_get, GETS), (p.parse_data, st.one_of(datas(), BULKS)),
]


@pytest.mark.parametrize("parse,messages", DIRECTIONS, ids=[d[0].__name__ for d in DIRECTIONS])
@SETTINGS
@given(data=st.data())
def test_round_trip(parse, messages, data):
    msg = data.draw(messages)
    frames = msg.encode()
    assert parse(frames) == msg
    assert parse(frames).encode() == frames


# a mutation of a valid message: change, drop or add a header field, or a frame
msgpack_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def mutated(draw, messages):
    frames = draw(messages).encode()
    head = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    how = draw(st.sampled_from(["field", "drop", "add", "frame-drop", "frame-add", "frame-garble", "op"]))
    if how == "field" and len(head) > 1:
        head[draw(st.integers(1, len(head) - 1))] = draw(msgpack_value)
    elif how == "drop" and len(head) > 1:
        del head[draw(st.integers(1, len(head) - 1))]
    elif how == "add":
        head.append(draw(msgpack_value))
    elif how == "op":
        head[0] = draw(st.text(max_size=14) | msgpack_value)
    elif how == "frame-drop" and len(frames) > 1:
        del frames[draw(st.integers(1, len(frames) - 1))]
    elif how == "frame-add":
        frames.append(draw(st.binary(max_size=16)))
    elif how == "frame-garble" and len(frames) > 1:
        frames[draw(st.integers(1, len(frames) - 1))] = draw(st.binary(max_size=16))
    return [msgpack.packb(head, use_bin_type=True), *frames[1:]]


@pytest.mark.parametrize("parse,messages", DIRECTIONS, ids=[d[0].__name__ for d in DIRECTIONS])
@SETTINGS
@given(data=st.data())
def test_mutations_parse_or_raise_protocol_error(parse, messages, data):
    frames = data.draw(mutated(messages))
    try:
        msg = parse(frames)
    except p.ProtocolError:
        return
    assert msg.encode()  # what parses is a whole message that encodes again


@pytest.mark.parametrize("parse", [d[0] for d in DIRECTIONS], ids=[d[0].__name__ for d in DIRECTIONS])
@SETTINGS
@given(frames=st.lists(st.binary(max_size=40), max_size=4))
def test_random_frames_raise_protocol_error_only(parse, frames):
    try:
        parse(frames)
    except p.ProtocolError:
        pass


KILLERS = [
    ("wait-workers without n", p.parse_from_client, [p.header(p.WAIT_WORKERS, 1, None, 5)]),
    ("wait-workers NaN timeout", p.parse_from_client, [p.header(p.WAIT_WORKERS, 1, 2, float("nan"))]),
    ("submit: fewer payloads than keys", p.parse_from_client,
     [p.header(p.SUBMIT, ["a", "b"], 0, [b"f"], None, 0, 0, None, False, None), p.pack([b"x"]), b"fn"]),
    ("submit: fidx shorter than keys", p.parse_from_client,
     [p.header(p.SUBMIT, ["a", "b"], [0], [b"f"], None, 0, 0, None, False, None), p.pack([b"x", b"y"]), b"fn"]),
    ("submit: function frame missing", p.parse_from_client,
     [p.header(p.SUBMIT, ["a"], 0, [b"f"], None, 0, 0, None, False, None), p.pack([b"x"])]),
    ("submit: unhashable key", p.parse_from_client,
     [p.header(p.SUBMIT, [["a"]], 0, [b"f"], None, 0, 0, None, False, None), p.pack([b"x"]), b"fn"]),
    ("hello-worker address not a str", p.parse_from_client, [p.header(p.HELLO_WORKER, {"address": [1]})]),
    ("finished: negative tid", p.parse_from_worker, [p.header(p.FINISHED, [-1], [8], []), p.pack([None])]),
    ("finished: column lengths differ", p.parse_from_worker,
     [p.header(p.FINISHED, [1, 2], [8], []), p.pack([None, None])]),
    ("finished: zero count timing", p.parse_from_worker,
     [p.header(p.FINISHED, [1], [8], [[b"f", 0, 1.0]]), p.pack([None])]),
    ("finished: refs not a map", p.parse_from_worker, [p.header(p.FINISHED, [1], [8], [], [b"r"]), p.pack([None])]),
    ("finished: ref too long", p.parse_from_worker,
     [p.header(p.FINISHED, [1], [8], [], {1: b"r" * (p.MAX_REF + 1)}), p.pack([None])]),
    ("finished: ref keyed by a key", p.parse_from_worker,
     [p.header(p.FINISHED, [1], [8], [], {"k": b"r"}), p.pack([None])]),
    ("compute: where reference not bytes", p.parse_to_worker,
     [p.header(p.COMPUTE, [1], ["k"], 0, [b"f"], [["d"]], {"d": ["ipc://a", 8, "ref"]}),
      p.pack([[b"p"], [b"fn"], {}])]),
    ("results: reference without an address", p.parse_to_client,
     [p.header(p.RESULTS, ["k"]), p.pack([[b"ref"]])]),
    ("get without fields", p.parse_get, [p.header(p.GET)]),
    ("get: unhashable keys", p.parse_get, [p.header(p.GET, 1, [[1]], True)]),
    ("empty frame", p.parse_get, [b""]),
    ("ZMTP 1.0 garbage", p.parse_get, [bytes([1, 0, 4, 0, 0x61, 0x62, 0x63])]),
    ("scatter: frames disagree", p.parse_from_client, [p.header(p.SCATTER, ["a"], [[[0], [0]]], None), b"x"]),
    ("store: bad descriptor kind", p.parse_to_worker, [p.header(p.STORE, [1], ["a"], [[[7]]]), b"x"]),
    ("activity: unknown kind", p.parse_from_client, [p.header(p.ACTIVITY, "dancing", 0, 1, "")]),
    ("activity: negative total", p.parse_from_client, [p.header(p.ACTIVITY, "building", 0, -1, "")]),
    ("activity: huge detail", p.parse_from_client, [p.header(p.ACTIVITY, "waiting", 0, 1, "x" * 10_000)]),
    ("activity: unhashable kind", p.parse_from_client, [p.header(p.ACTIVITY, ["building"], 0, 1, "")]),
]


@pytest.mark.parametrize("why,parse,frames", KILLERS, ids=[k[0] for k in KILLERS])
def test_known_killers_raise_protocol_error(why, parse, frames):
    with pytest.raises(p.ProtocolError):
        parse(frames)


def test_directions_name_every_type():
    """Every op a direction accepts has a parser; the docstring names each op."""
    for table in p.DIRECTIONS.values():
        for op in table:
            assert f"  {op} " in p.__doc__, op
