"""Futures found in arguments and replaced by values: no reference cycles, so a large
dependency is freed the moment its last task is done, not at the next garbage collection."""

import gc
import weakref

import pytest

from frisky.data.deps import DepRef, extract, substitute

pytestmark = pytest.mark.timeout(10)


class Value:
    """Stands for a large fetched array (weak-referenceable)."""


class FakeFuture:
    def __init__(self, key):
        self.key = key


@pytest.fixture
def no_gc():
    was = gc.isenabled()
    gc.disable()
    yield
    if was:
        gc.enable()


def test_substitute_leaves_no_cycle_holding_values(no_gc):
    v = Value()
    ref = weakref.ref(v)
    args, kwargs = substitute((DepRef("a"), 1), {"y": [DepRef("a")], "z": {DepRef("a")}}, {"a": v})
    assert args == (v, 1) and kwargs["y"] == [v] and kwargs["z"] == {v}
    del v, args, kwargs
    assert ref() is None, "freed by reference counting alone"


def test_extract_finds_nested_futures_and_leaves_no_cycle(no_gc):
    f = FakeFuture("k1")
    ref = weakref.ref(f)
    args, kwargs, keys = extract(([f], {"y": f}), {"z": (f, 2)}, FakeFuture, lambda fut: fut.key)
    assert keys == ["k1"]
    assert type(args[0][0]) is DepRef and args[0][0].key == "k1"
    assert kwargs["z"][0].key == "k1" and kwargs["z"][1] == 2
    del f
    assert ref() is None, "no closure cycle keeps the future alive"


def test_extract_flat_arguments():
    f = FakeFuture("k2")
    args, kwargs, keys = extract((f, 3, f), {}, FakeFuture, lambda fut: fut.key)
    assert [type(a) for a in args] == [DepRef, int, DepRef] and keys == ["k2"]
