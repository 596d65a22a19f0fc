"""Errors raised by the Frisky runtime (as opposed to those raised by user code)."""

from __future__ import annotations


class FriskyError(Exception):
    """An error raised by the Frisky runtime rather than by user code."""


class KilledWorker(FriskyError):
    """A task was running on every worker that died while running it, too many times."""


class DataLost(FriskyError):
    """A result is gone and cannot be recomputed (e.g. scattered data on a dead worker)."""


class SchedulerGone(FriskyError, ConnectionError):
    """The scheduler closed or stopped answering."""


class ClientClosed(FriskyError, RuntimeError):
    """The client was closed: it submits nothing and fetches nothing any more."""


_ERROR_KINDS = {"killed": KilledWorker, "lost": DataLost}
