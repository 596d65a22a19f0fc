"""User payloads: functions, arguments, results and exceptions.

Two codecs share one interface. ``PickleCodec`` turns objects into bytes for other
processes: plain ``pickle`` for built-in atoms (fast), cloudpickle with pickle protocol 5
otherwise, so large buffers travel out of band without being copied into the stream.
``LocalCodec`` serves in-process clusters: it hands out small handles to objects kept
in an :class:`ObjectTable`, so nothing is pickled at all.

A serialized *value* is either ``bytes`` (small: travels inline through the scheduler)
or a list of frames ``[pickle_stream, buffer, ...]`` (large: stays on its worker).
"""

from __future__ import annotations

import itertools
import pickle
import threading
import traceback
from typing import Any

from frisky import config
from frisky.data.deps import DepRef

_ATOMIC = frozenset({int, float, str, bytes, bool, type(None), complex})
_ATOMIC_ARGS = _ATOMIC | {DepRef}  # what plain pickle takes by value in a flat argument tuple
_DUMPS = pickle.dumps
_LOADS = pickle.loads
HIGHEST = pickle.HIGHEST_PROTOCOL


class SerializationError(TypeError):
    """An object cannot be serialized; raised at the call that passed it."""


def _cloudpickle():
    import cloudpickle

    return cloudpickle


def is_atomic(values, atomic: frozenset = _ATOMIC) -> bool:
    """True when every value is a built-in atom that plain pickle handles by value."""
    for v in values:
        if type(v) not in atomic:
            return False
    return True


def is_plain(values, depth: int = 0) -> bool:
    """True for atoms, dependency references and small built-in containers of them:
    what plain pickle serializes by value, so cloudpickle's slower pickler is not needed."""
    atomic = _ATOMIC
    for v in values:
        t = type(v)
        if t in atomic or t is DepRef:
            continue
        if depth < 3 and (t is tuple or t is list) and len(v) <= 64:
            if not is_plain(v, depth + 1):
                return False
            continue
        if depth < 3 and t is dict and len(v) <= 64:
            if not is_plain(v.keys(), depth + 1) or not is_plain(v.values(), depth + 1):
                return False
            continue
        return False
    return True


def dumps_by_reference(obj: Any, buffer_callback=None) -> bytes:
    """Plain pickle (protocol 5) when every class and function in ``obj`` can be imported by
    name elsewhere, else cloudpickle, which pickles those by value: lambdas, local classes,
    anything defined in ``__main__``. Plain pickle is several times faster on small values
    (a NumPy scalar: 3 µs against 30 µs)."""
    if buffer_callback is None:
        try:
            data = _DUMPS(obj, HIGHEST)
        except Exception:  # noqa: BLE001 - e.g. a local class: cloudpickle handles it by value
            return _cloudpickle().dumps(obj, protocol=HIGHEST)
        if b"__main__" not in data:
            return data
        return _cloudpickle().dumps(obj, protocol=HIGHEST)
    buffers: list = []
    try:
        data = _DUMPS(obj, HIGHEST, buffer_callback=buffers.append)
    except Exception:  # noqa: BLE001 - as above
        data = b"__main__"
    if b"__main__" in data:
        buffers.clear()
        data = _cloudpickle().dumps(obj, protocol=HIGHEST, buffer_callback=buffers.append)
    for b in buffers:
        buffer_callback(b)
    return data


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised on another process."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def attach_traceback(exc: BaseException, tb: str | None) -> BaseException:
    """Chain the remote traceback text onto ``exc`` (as ProcessPoolExecutor does)."""
    if tb:
        exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    return exc


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class PickleCodec:
    """Serialize for other processes: pickle for atoms, cloudpickle + protocol 5 otherwise."""

    local = False

    def __init__(self, inline_threshold: int | None = None) -> None:
        self.inline_threshold = config.get("inline_threshold", inline_threshold)

    # functions and arguments -------------------------------------------------
    def dumps_function(self, fn) -> bytes:
        try:
            return _cloudpickle().dumps(fn, protocol=HIGHEST)
        except Exception as e:
            raise SerializationError(f"cannot serialize function {fn!r}: {e}") from e

    def loads_function(self, blob: bytes):
        return _LOADS(blob)

    def dumps_args(self, args: tuple, kwargs: dict | None) -> bytes:
        try:
            if not kwargs and is_atomic(args, _ATOMIC_ARGS):
                return _DUMPS(args, HIGHEST)
            if is_plain(args) and (not kwargs or is_plain(kwargs.values())):
                return _DUMPS([args, kwargs] if kwargs else args, HIGHEST)
            # a list marks "with kwargs"; a bare tuple is positional arguments only
            return _cloudpickle().dumps([args, kwargs] if kwargs else args, protocol=HIGHEST)
        except Exception as e:
            raise SerializationError(f"cannot serialize arguments: {e}") from e

    def loads_args(self, blob: bytes) -> tuple[tuple, dict]:
        obj = _LOADS(blob)
        if type(obj) is list:
            return obj[0], obj[1]
        return obj, {}

    # values -------------------------------------------------------------------
    def dumps_value(self, obj: Any) -> bytes | list:
        """``bytes`` when small enough to travel inline, else ``[stream, *buffers]``."""
        if type(obj) in _ATOMIC:
            data = _DUMPS(obj, HIGHEST)
            if len(data) < self.inline_threshold:
                return data
            return [data]
        buffers: list = []
        data = dumps_by_reference(obj, buffers.append)
        size = len(data)
        for b in buffers:
            size += b.raw().nbytes
        if size < self.inline_threshold:
            if buffers:
                return dumps_by_reference(obj, None)
            return data
        return [data, *[b.raw() for b in buffers]]

    def loads_value(self, frames) -> Any:
        if isinstance(frames, (bytes, bytearray, memoryview)):
            return _LOADS(frames)
        return _LOADS(frames[0], buffers=frames[1:])

    def dumps_exception(self, exc: BaseException) -> bytes:
        try:
            return _cloudpickle().dumps(exc, protocol=HIGHEST)
        except Exception:
            return _DUMPS(RuntimeError(f"{type(exc).__name__}: {exc}"), HIGHEST)

    def loads_exception(self, blob: bytes) -> BaseException:
        try:
            exc = _LOADS(blob)
        except Exception as e:  # the exception's class may not import here
            return RuntimeError(f"remote exception could not be deserialized: {e!r}")
        if not isinstance(exc, BaseException):
            return RuntimeError(repr(exc))
        return exc

    def release(self, blobs) -> None:
        """Nothing to do: bytes are freed with the messages that carry them."""


class ObjectTable:
    """Objects of an in-process cluster, by handle. The scheduler releases handles."""

    def __init__(self) -> None:
        self._objects: dict[bytes, Any] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def put(self, obj: Any) -> bytes:
        handle = next(self._ids).to_bytes(8, "little")
        self._objects[handle] = obj
        return handle

    def get(self, handle: bytes) -> Any:
        return self._objects[handle]

    def release(self, handles) -> None:
        pop = self._objects.pop
        for h in handles:
            if h is not None:
                pop(h, None)

    def __len__(self) -> int:
        return len(self._objects)

    def clear(self) -> None:
        self._objects.clear()


class LocalCodec:
    """Serialize for an in-process cluster: objects are passed by reference, never pickled."""

    local = True

    def __init__(self, table: ObjectTable) -> None:
        self.table = table

    def dumps_function(self, fn) -> bytes:
        return self.table.put(fn)

    def loads_function(self, blob: bytes):
        return self.table.get(blob)

    def dumps_args(self, args: tuple, kwargs: dict | None) -> bytes:
        return self.table.put((args, kwargs or {}))

    def loads_args(self, blob: bytes) -> tuple[tuple, dict]:
        return self.table.get(blob)

    def dumps_value(self, obj: Any) -> bytes:
        return self.table.put(obj)

    def loads_value(self, frames) -> Any:
        return self.table.get(bytes(frames))

    def dumps_exception(self, exc: BaseException) -> bytes:
        return self.table.put(exc)

    def loads_exception(self, blob: bytes) -> BaseException:
        return self.table.get(blob)

    def release(self, blobs) -> None:
        self.table.release(blobs)


def check_picklable(obj: Any, what: str) -> None:
    """Raise :class:`SerializationError` naming ``what`` if ``obj`` cannot be pickled."""
    try:
        _cloudpickle().dumps(obj, protocol=HIGHEST)
    except Exception as e:
        raise SerializationError(f"cannot serialize {what}: {e}") from e
