"""Values a worker holds: results too large to travel inline, and scattered data.

Memory accounting and spilling build on this (``nbytes`` per key, LRU order).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any


def sizeof(obj: Any) -> int:
    """A cheap, pessimistic size estimate in bytes."""
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    t = type(obj)
    if t in (bytes, bytearray, str):
        return len(obj) + 49
    if t is memoryview:
        return obj.nbytes
    if t in (list, tuple, set, frozenset):
        n = len(obj)
        if n == 0:
            return sys.getsizeof(obj)
        sample = list(obj)[:10] if t in (set, frozenset) else obj[:10]
        return sys.getsizeof(obj) + n * sum(sizeof(x) for x in sample) // len(sample)
    if t is dict:
        n = len(obj)
        if n == 0:
            return sys.getsizeof(obj)
        items = list(obj.items())[:10]
        return sys.getsizeof(obj) + n * sum(sizeof(k) + sizeof(v) for k, v in items) // len(items)
    return sys.getsizeof(obj)


class Store:
    """Key -> value in memory, in least-recently-used order, with byte counts."""

    def __init__(self) -> None:
        self.data: OrderedDict[str, Any] = OrderedDict()
        self.sizes: dict[str, int] = {}
        self.nbytes = 0
        self.lock = threading.Lock()

    def put(self, key: str, value: Any, nbytes: int) -> None:
        with self.lock:
            if key in self.data:
                self.nbytes -= self.sizes[key]
            self.data[key] = value
            self.sizes[key] = nbytes
            self.nbytes += nbytes

    def get(self, key: str, default: Any = KeyError) -> Any:
        """The value of ``key`` (now most recently used); ``default`` if absent, else KeyError."""
        with self.lock:
            if key not in self.data:
                if default is KeyError:
                    raise KeyError(key)
                return default
            self.data.move_to_end(key)
            return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def pop(self, key: str) -> None:
        with self.lock:
            if key in self.data:
                del self.data[key]
                self.nbytes -= self.sizes.pop(key)

    def clear(self) -> None:
        with self.lock:
            self.data.clear()
            self.sizes.clear()
            self.nbytes = 0
