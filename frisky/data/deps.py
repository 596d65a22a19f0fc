"""Futures inside task arguments: found on the client, replaced by values on the worker.

Like Dask, Frisky looks inside tuples, lists, sets and dicts (not arbitrary objects).
"""

from __future__ import annotations

from typing import Any


class DepRef:
    """Stands in a task's arguments for the result of another task."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self):
        return (DepRef, (self.key,))

    def __repr__(self) -> str:
        return f"DepRef({self.key!r})"


_CONTAINERS = (tuple, list, set, frozenset, dict)


def extract(args: tuple, kwargs: dict, future_type: type, on_future) -> tuple[tuple, dict, list[str]]:
    """Replace futures in ``args``/``kwargs`` by :class:`DepRef`; return them and the dep keys.

    ``on_future(f)`` is called for each future found (to check it belongs to this client)
    and returns its wire key.
    """
    if not kwargs:  # the common case: a flat tuple of futures and atoms
        flat = []
        keys = []
        for a in args:
            if isinstance(a, future_type):
                key = on_future(a)
                flat.append(DepRef(key))
                keys.append(key)
            elif type(a) in _CONTAINERS:
                break
            else:
                flat.append(a)
        else:
            if len(keys) > 1 and len(set(keys)) < len(keys):
                keys = list(dict.fromkeys(keys))
            return tuple(flat), kwargs, keys
    found: dict[str, None] = {}
    new_args = _extract(args, future_type, on_future, found)
    new_kwargs = _extract(kwargs, future_type, on_future, found) if kwargs else kwargs
    return new_args, new_kwargs, list(found)


# Module-level recursion, not a nested function: a closure that calls itself is a reference
# cycle, and it would keep the values it closes over (large arrays) until the next gc.
def _extract(x: Any, future_type: type, on_future, found: dict) -> Any:
    t = type(x)
    if isinstance(x, future_type):
        key = on_future(x)
        found[key] = None
        return DepRef(key)
    if t is tuple or t is list:
        new = [_extract(v, future_type, on_future, found) for v in x]
        if all(a is b for a, b in zip(new, x)):
            return x
        return t(new)
    if t is dict:
        new_d = {k: _extract(v, future_type, on_future, found) for k, v in x.items()}
        if all(new_d[k] is v for k, v in x.items()):
            return x
        return new_d
    if t is set or t is frozenset:
        new_s = [_extract(v, future_type, on_future, found) for v in x]
        if all(a is b for a, b in zip(new_s, x)):
            return x
        return t(new_s)
    return x


def has_futures(values, future_type: type) -> bool:
    """Cheap pre-check: could these values hold futures? (Only containers and futures can.)"""
    for v in values:
        if isinstance(v, future_type) or type(v) in _CONTAINERS:
            return True
    return False


def substitute(args: tuple, kwargs: dict, values: dict[str, Any]) -> tuple[tuple, dict]:
    """Replace every :class:`DepRef` by ``values[key]``."""
    return _substitute(args, values), (_substitute(kwargs, values) if kwargs else kwargs)


def _substitute(x: Any, values: dict[str, Any]) -> Any:
    t = type(x)
    if t is DepRef:
        return values[x.key]
    if t is tuple or t is list:
        return t([_substitute(v, values) for v in x])
    if t is dict:
        return {k: _substitute(v, values) for k, v in x.items()}
    if t is set or t is frozenset:
        return t(_substitute(v, values) for v in x)
    return x
