"""Settings as users write them: sizes and memory limits, parsed or refused clearly."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import frisky
from frisky import config

GiB = 2**30
TOTAL = 16 * GiB


@pytest.mark.parametrize("value, expected", [
    (GiB, GiB),
    ("4GiB", 4 * GiB),
    ("1.5 GiB", GiB + GiB // 2),
    ("500MB", 500 * 10**6),
    (0.5, TOTAL // 2),
    ("0.5", TOTAL // 2),  # a fraction as a string, as the command line gives it
    ("50%", TOTAL // 2),
    (1.0, TOTAL),
    (4e9, 4 * 10**9),
    ("auto", None),
    (None, None),
])
def test_memory_limits_users_write(value, expected):
    assert config.parse_memory_limit(value, TOTAL) == expected


@pytest.mark.parametrize("value, says", [
    ("lots", "unknown size unit"),
    (1.5, "fraction in (0, 1]"),
    ("1.5", "fraction in (0, 1]"),
    (10, "below the minimum of 1 MiB"),
    ("10", "below the minimum of 1 MiB"),
    (0, "below the minimum"),
    (-1, "negative"),
    ("-2GiB", "non-negative"),
    ("150%", "(0, 1]"),
    (True, "not a size"),
    (float("nan"), "finite"),
    ([1], "not a size"),
])
def test_memory_limits_refused_with_a_message(value, says):
    with pytest.raises(ValueError, match="memory_limit") as e:
        config.parse_memory_limit(value, TOTAL)
    assert says in str(e.value)


@given(st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=True, allow_infinity=True)))
def test_parse_memory_limit_answers_or_refuses_anything(value):
    try:
        limit = config.parse_memory_limit(value, TOTAL)
    except ValueError as e:
        assert "memory_limit" in str(e)
        return
    assert limit is None or (isinstance(limit, int) and limit >= config.MIN_MEMORY_LIMIT)
    if isinstance(value, float) and 0 < value <= 1:
        assert limit == int(value * TOTAL)
    if isinstance(value, float) and not math.isfinite(value):
        raise AssertionError(f"{value!r} accepted")


@pytest.mark.parametrize("kwargs, says", [
    ({"memory_limit": 10}, "below the minimum"),
    ({"memory_limit": "0.5x"}, "memory_limit"),
    ({"memory_limit": 1.5}, "fraction"),
    ({"transport": "udp"}, "transport"),
    ({"transport": "inproc"}, "transport"),  # processes need ipc or tcp
    ({"transport": "ipc", "processes": False}, "transport"),
])
def test_local_cluster_refuses_what_it_cannot_honour(kwargs, says):
    with pytest.raises(ValueError, match=says):
        frisky.LocalCluster(n_workers=1, **kwargs)


def test_local_cluster_takes_a_fraction_as_a_string():
    with frisky.LocalCluster(n_workers=1, processes=False, memory_limit="0.25") as c:
        assert c.memory_limit == int(config.total_memory() * 0.25)
