"""Frisky futures: real ``concurrent.futures.Future`` objects, plus ``wait``/``as_completed``.

A future whose result stays on a worker (too large to travel inline) finishes holding
a :class:`Remote` marker; ``result()`` fetches the value from that worker on demand.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from typing import Any

_fetching = threading.RLock()  # one remote fetch at a time per process; they are rare

__all__ = ["Future", "wait", "as_completed", "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"]


class Remote:
    """A result held by the worker at ``address``; ``error`` once the scheduler reported it
    lost for good (set by the client's I/O thread)."""

    __slots__ = ("address", "error", "ref")

    def __init__(self, address: str, ref: bytes | None = None) -> None:
        self.address = address
        self.error: BaseException | None = None
        self.ref = ref  # the holder's same-host reference: viewed in place when it still holds


_PENDING = "PENDING"
_FINISHED = "FINISHED"
_DONE_STATES = ("CANCELLED", "CANCELLED_AND_NOTIFIED", _FINISHED)
# Guards the moment a future's condition comes into being against the lock-free
# completion path below: held for a few bytecodes, never while waiting.
_birth = threading.Lock()


class Future(concurrent.futures.Future):
    """The eventual result of a task. Dropping the last reference releases it on the cluster.

    Behaves exactly like :class:`concurrent.futures.Future`. Its condition variable (the
    costly part of a stdlib future) is made only when something waits on it or adds a
    callback; until then completion and ``result()`` take a lock-free path.
    """

    __dask_future__ = True  # dask's graphs take a future as a reference to its key

    def __init__(self, key: Any, wire_key: str, client) -> None:
        # no super().__init__(): _condition, _waiters and _done_callbacks come on first use
        self._state = _PENDING
        self._result = None
        self._exception = None
        self.key = key
        self._wkey = wire_key
        self._client = client

    @property
    def _condition(self) -> threading.Condition:
        d = self.__dict__
        cond = d.get("_cond")
        if cond is None:
            with _birth:
                cond = d.get("_cond")
                if cond is None:
                    d["_waiters"] = []
                    d["_done_callbacks"] = d.pop("_early_callbacks", [])
                    cond = d["_cond"] = threading.Condition()
        return cond

    def _finish_fast(self, attr: str, value: Any) -> bool:
        """Complete without a condition when nobody waits (True), else leave it (False)."""
        if "_cond" in self.__dict__:
            return False
        with _birth:
            if "_cond" in self.__dict__:
                return False
            if self._state in _DONE_STATES:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            setattr(self, attr, value)
            self._state = _FINISHED
            callbacks = self.__dict__.pop("_early_callbacks", None)
        if callbacks:
            self._run_callbacks(callbacks)
        return True

    def set_result(self, result: Any) -> None:
        if not self._finish_fast("_result", result):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._finish_fast("_exception", exception):
            super().set_exception(exception)

    def add_done_callback(self, fn) -> None:
        """As :meth:`concurrent.futures.Future.add_done_callback`, without making a condition.

        A pending future with a callback is kept alive by its client until it completes,
        so the callback runs even if the caller drops the future (as with the stdlib).
        """
        if self._state not in _DONE_STATES:
            client = self._client
            if client is not None:
                client._keep_until_done(self)
        if "_cond" not in self.__dict__:
            with _birth:
                if "_cond" not in self.__dict__:
                    if self._state not in _DONE_STATES:
                        self.__dict__.setdefault("_early_callbacks", []).append(fn)
                        return
                    run_now = True
                else:
                    run_now = False
            if run_now:
                self._run_callbacks([fn])
                return
        super().add_done_callback(fn)

    def _run_callbacks(self, callbacks: list) -> None:
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                concurrent.futures._base.LOGGER.exception("exception calling callback for %r", self)

    def set_running_or_notify_cancel(self) -> bool:
        if "_cond" not in self.__dict__:
            with _birth:
                if "_cond" not in self.__dict__:
                    if self._state == "CANCELLED":
                        self._state = "CANCELLED_AND_NOTIFIED"
                        return False
                    if self._state == _PENDING:
                        self._state = "RUNNING"
                        return True
                    raise RuntimeError(f"Future in unexpected state {self._state}")
        return super().set_running_or_notify_cancel()

    def done(self) -> bool:
        return self._state in _DONE_STATES

    def _wait(self, timeout: float | None = None) -> bool:
        """Block until done (or ``timeout``); True if done. Cheap when already done."""
        if self._state in _DONE_STATES:
            return True
        with self._condition:
            if self._state not in _DONE_STATES:
                self._condition.wait(timeout)
            return self._state in _DONE_STATES

    def result(self, timeout: float | None = None) -> Any:
        if self._state == _FINISHED and self._exception is None:
            value = self._result
        else:
            value = super().result(timeout)
        if type(value) is Remote:
            with _fetching:
                value = self._result
                if type(value) is Remote:
                    value = self._client._fetch_remote(self._wkey, self.key, value, timeout)
                    self._result = value
        return value

    def cancel(self) -> bool:
        """Cancel a task that has not finished; returns False once it has."""
        if super().cancel():
            client = self._client
            if client is not None:
                client._cancel_keys([self._wkey])
            return True
        return False

    def release(self) -> None:
        """Tell the cluster this future's result is no longer needed (as dropping it would)."""
        client, self._client = self._client, None
        if client is not None:
            client._release_later(self._wkey)

    def __del__(self) -> None:
        client = self._client
        if client is not None:
            # our weakref is cleared only after __del__ returns; say so for the I/O thread
            self._dead = True
            client._release_later(self._wkey)

    def __repr__(self) -> str:
        with self._condition:
            state = self._state.lower()
            extra = ""
            if self._state == "FINISHED":
                extra = f" {'error' if self._exception is not None else 'ready'}"
        return f"<frisky.Future: {state}{extra} key={self.key!r}>"

    def __reduce__(self):
        raise TypeError(
            "a frisky.Future cannot be pickled; pass it as a direct argument to submit/map "
            "(also inside lists, tuples, dicts and sets) to depend on it"
        )


def wait(fs: Iterable[concurrent.futures.Future], timeout: float | None = None, return_when: str = ALL_COMPLETED):
    """Wait for futures, exactly like :func:`concurrent.futures.wait`."""
    return concurrent.futures.wait(fs, timeout=timeout, return_when=return_when)


class as_completed:
    """Iterate over futures as they finish; more may be added with :meth:`add` while iterating.

    Like :func:`concurrent.futures.as_completed`, ``timeout`` bounds the whole iteration
    and raises ``TimeoutError``; duplicates are yielded once.
    """

    def __init__(self, fs: Iterable[concurrent.futures.Future] = (), timeout: float | None = None,
                 with_results: bool = False) -> None:
        self._cond = threading.Condition()
        self._done: collections.deque = collections.deque()
        self._pending: set = set()
        self._seen: weakref.WeakSet = weakref.WeakSet()  # weak: yielded futures may be freed
        self._timeout = timeout
        self._with_results = with_results
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.update(fs)

    def _on_done(self, f) -> None:
        with self._cond:
            if f in self._pending:
                self._pending.discard(f)
                self._done.append(f)
                self._cond.notify_all()

    def add(self, future: concurrent.futures.Future) -> None:
        """Also yield ``future`` when it finishes."""
        with self._cond:
            if future in self._seen:
                return
            self._seen.add(future)
            self._pending.add(future)
        future.add_done_callback(self._on_done)

    def update(self, futures: Iterable[concurrent.futures.Future]) -> None:
        for f in futures:
            self.add(f)

    def count(self) -> int:
        with self._cond:
            return len(self._pending) + len(self._done)

    def is_empty(self) -> bool:
        return self.count() == 0

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        with self._cond:
            while not self._done:
                if not self._pending:
                    raise StopIteration
                remaining = None
                if self._deadline is not None:
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"{len(self._pending)} (of {len(self._seen)}) futures unfinished")
                self._cond.wait(remaining)
            f = self._done.popleft()
        if self._with_results:
            return f, f.result()
        return f
