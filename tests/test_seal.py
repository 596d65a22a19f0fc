"""AES-256-GCM sealing of bulk messages (frisky.data.seal): what opens is exactly what was
sealed, and nothing else opens — not a flipped bit, a replayed, reordered or foreign part."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frisky.data import seal

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_PART = 64  # parts this small make every message span several of them


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    monkeypatch.setattr(seal, "PART", SMALL_PART)


frame = st.binary(max_size=300)
message = st.lists(frame, min_size=1, max_size=4)


def _open_all(opener: seal.Opener, parts: list) -> list:
    out = []
    for p in parts:
        got = opener.feed(p)
        if got is not None:
            out.append((got[0], [bytes(f) for f in got[1]]))
    return out


@SETTINGS
@given(messages=st.lists(message, min_size=1, max_size=4))
def test_what_opens_is_what_was_sealed(messages):
    secret = seal.new_secret()
    sealer, opener = seal.Sealer(secret), seal.Opener(secret)
    parts = [(x, list(sealer.seal(x, m))) for x, m in enumerate(messages)]
    for x, m in enumerate(messages):
        assert _open_all(opener, parts[x][1]) == [(x, m)]


@SETTINGS
@given(msg=message, data=st.data())
def test_any_flipped_bit_is_refused(msg, data):
    secret = seal.new_secret()
    parts = [bytearray(p) for p in seal.Sealer(secret).seal(3, msg)]
    i = data.draw(st.integers(0, len(parts) - 1))
    bit = data.draw(st.integers(0, len(parts[i]) * 8 - 1))
    parts[i][bit // 8] ^= 1 << (bit % 8)
    opener = seal.Opener(secret)
    with pytest.raises(seal.SealError):
        _open_all(opener, parts)


@SETTINGS
@given(msg=message, data=st.data())
def test_dropped_replayed_or_reordered_parts_are_refused(msg, data):
    secret = seal.new_secret()
    sealer = seal.Sealer(secret)
    parts = list(sealer.seal(1, msg)) + list(sealer.seal(2, msg)) + list(sealer.seal(3, [b"end"]))
    how = data.draw(st.sampled_from(["drop", "replay", "swap"]))
    i = data.draw(st.integers(0, len(parts) - 2))
    if how == "drop":
        del parts[i]
    elif how == "replay":
        parts.insert(i + 1, parts[i])
    else:
        parts[i], parts[i + 1] = parts[i + 1], parts[i]
    with pytest.raises(seal.SealError):
        _open_all(seal.Opener(secret), parts)


def test_parts_of_another_link_or_direction_do_not_open():
    msg = [b"x" * 200]
    mine, theirs = seal.new_secret(), seal.new_secret()
    with pytest.raises(seal.SealError, match="authenticate"):
        _open_all(seal.Opener(mine), list(seal.Sealer(theirs).seal(1, msg)))
    # an attach sealed by the requester is not a reply, nor the other way round
    with pytest.raises(seal.SealError):
        _open_all(seal.Opener(mine), list(seal.Sealer(mine, attach=True).seal(1, msg)))
    with pytest.raises(seal.SealError):
        _open_all(seal.Opener(mine, attach=True), list(seal.Sealer(mine).seal(1, msg)))


def test_nonces_never_repeat_under_a_key():
    """One sender per key, a counter per sender; a second sender with the same secret
    (a requester that reused it) gets a fresh salt, hence another key."""
    secret = seal.new_secret()
    a, b = seal.Sealer(secret), seal.Sealer(secret)
    assert a.salt != b.salt
    counters = [seal.HEADER.unpack_from(p)[4] for x in range(5) for p in a.seal(x, [os.urandom(150), b""])]
    assert counters == list(range(len(counters)))
    same = [b"z" * 100]
    assert bytes(next(a.seal(9, same)))[seal.HEADER.size:] != bytes(next(b.seal(9, same)))[seal.HEADER.size:]


def test_a_server_that_remakes_its_side_starts_a_new_sequence():
    secret = seal.new_secret()
    opener = seal.Opener(secret)
    first, second = seal.Sealer(secret), seal.Sealer(secret)
    assert _open_all(opener, list(first.seal(1, [b"a" * 100]))) == [(1, [b"a" * 100])]
    assert _open_all(opener, list(second.seal(2, [b"b"]))) == [(2, [b"b"])]
    old = list(first.seal(3, [b"c"]))
    assert _open_all(opener, old) == [(3, [b"c"])]  # the first side, still in sequence
    with pytest.raises(seal.SealError, match="sequence"):
        _open_all(opener, old)  # but never twice


@SETTINGS
@given(junk=st.binary(max_size=200))
def test_garbage_is_refused_with_seal_error_only(junk):
    with pytest.raises(seal.SealError):
        seal.Opener(seal.new_secret()).feed(junk)


def test_a_claimed_frame_size_over_the_limit_is_refused_before_allocating():
    secret = seal.new_secret()
    parts = list(seal.Sealer(secret).seal(1, [b"y" * 1000]))
    with pytest.raises(seal.SealError, match="does not fit"):
        seal.Opener(secret, max_frame=999).feed(parts[0])
