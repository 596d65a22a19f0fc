"""The calls of one ``FriskyExecutor.map``: results held by position, no future per call.

The user of ``Executor.map`` only ever sees results, in order, so a future per call would
be pure overhead (creating, registering, completing and releasing it cost about half of
the client's time per task). A job's task keys are ``<prefix>.<hex index>``; the client's
I/O thread drops each result into its slot, and the consumer waits on one condition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import CancelledError
from typing import Any

from frisky.client.future import Remote

_PENDING = object()
_CANCELLED = object()
_RELEASE_EVERY = 4096  # consumed keys released per message


class Failed:
    """A call that raised: its slot holds the exception."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class MapJob:
    """Result slots of one map; filled by the client's I/O thread, read in order by one
    consumer. Registered with the client until every call has an outcome."""

    def __init__(self, client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix  # task keys are f"{prefix}.{index:x}"
        self.slots: list = []
        self.n = -1  # calls submitted, once submission is over
        self.outcomes = 0  # slots filled (results, failures, cancellations)
        self.cond = threading.Condition()
        self.error: BaseException | None = None  # the client closed or lost its scheduler
        self.closed = False  # the consumer is done with it
        self.released = 0  # keys below this index were released

    def key(self, i: int) -> str:
        return f"{self.prefix}.{i:x}"

    def keys_of(self, indices: Iterable[int]) -> list[str]:
        prefix = self.prefix + "."
        return [f"{prefix}{i:x}" for i in indices]

    @property
    def complete(self) -> bool:
        return self.outcomes == self.n or self.error is not None

    # -------------------------------------------------------------- I/O thread
    def put(self, i: int, value: Any) -> None:
        slots = self.slots
        if i < len(slots) and slots[i] is _PENDING:
            slots[i] = value
            self.outcomes += 1

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.notify()

    # ---------------------------------------------------------------- consumer
    def take(self, i: int, deadline: float | None) -> Any:
        """The outcome of call ``i``: waits for it until ``deadline`` (monotonic)."""
        slots = self.slots
        value = slots[i]
        if value is _PENDING:
            with self.cond:
                while slots[i] is _PENDING:
                    if self.error is not None:
                        raise self.error
                    if deadline is None:
                        self.cond.wait()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError()
                        self.cond.wait(left)
            value = slots[i]
        slots[i] = None  # hold nothing that was handed out
        if type(value) is Remote:  # fetched before its key can be released
            key = self.key(i)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = self.client._fetch_remote(key, key, value, left)
        if (i + 1) - self.released >= _RELEASE_EVERY:
            self.client._release_job_keys(self, i + 1)
        if type(value) is Failed:
            raise value.exc
        if value is _CANCELLED:
            raise CancelledError()
        return value

    def close(self, next_index: int) -> None:
        """The consumer stops at ``next_index``: calls no worker has been given yet are
        cancelled, the others run on (as a stdlib executor's running calls do)."""
        if self.closed:
            return
        if next_index < self.n and not self.complete:
            pending = [i for i in range(next_index, self.n) if self.slots[i] is _PENDING]
            for key in self.client._cancel_queued_keys(self.keys_of(pending)):
                self.put(int(key.rpartition(".")[2], 16), _CANCELLED)
        self.closed = True
        self.client._job_maybe_done(self)

    def abandon(self) -> None:
        """The consumer was dropped before it started: everything runs on."""
        self.closed = True
        self.client._job_maybe_done(self)

    def cancel_queued(self) -> None:
        """``shutdown(cancel_futures=True)``: cancel the calls no worker has been given."""
        pending = [i for i in range(max(self.n, 0)) if self.slots[i] is _PENDING]
        for key in self.client._cancel_queued_keys(self.keys_of(pending)):
            self.put(int(key.rpartition(".")[2], 16), _CANCELLED)
        self.notify()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every call has an outcome; True if so."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self.complete:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(left)
        return True

