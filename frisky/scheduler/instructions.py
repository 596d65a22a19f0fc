"""What the scheduler's state machine tells the server to send: one named type per instruction.

:meth:`SchedulerState.flush <frisky.scheduler.state.SchedulerState.flush>` returns a list
of these; ``SchedulerServer._send`` turns each into a message (see ``protocol.py``).
NamedTuples: tuple speed, fields by name.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Compute(NamedTuple):
    """Run ``tids`` on ``worker``."""

    worker: int
    tids: list[int]
    keys: list[str]
    fidx: Any  # int: one function for all; else per-task index into fids
    fids: list[bytes]
    deps: list | None  # per task: dependency keys, or None
    where: dict  # dep key -> [holder address, nbytes, same-host reference?], for deps held elsewhere
    payloads: list
    fn_blobs: list
    inline: dict  # dep key -> inline blob


class Running(NamedTuple):
    """Tell ``client`` these tasks were handed to a worker."""

    client: int
    keys: list[str]


class Results(NamedTuple):
    """Tell ``client`` these keys are done: per key, the inline blob, the holder's address,
    or ``[address, same-host reference]``."""

    client: int
    keys: list[str]
    blobs: list


class Erred(NamedTuple):
    """Tell ``client`` these keys failed."""

    client: int
    keys: list[str]
    excs: list  # exception blobs, or [kind, text] for the scheduler's own errors
    tracebacks: list[str]


class Free(NamedTuple):
    """Tell ``worker`` to drop the data of ``keys``."""

    worker: int
    keys: list[str]


class Cancel(NamedTuple):
    """Tell ``worker`` to drop ``tids`` if not started."""

    worker: int
    tids: list[int]


class ReleaseBlobs(NamedTuple):
    """In-process cluster: handles the server must release."""

    blobs: list


INSTRUCTIONS = (Compute, Running, Results, Erred, Free, Cancel, ReleaseBlobs)
