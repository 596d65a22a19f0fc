"""Frisky: a fast, Dask-like parallel executor for Python.

``import frisky`` stays cheap: names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "Client": "frisky.client",
    "FriskyError": "frisky.errors",
    "KilledWorker": "frisky.errors",
    "DataLost": "frisky.errors",
    "SchedulerGone": "frisky.errors",
    "LocalCluster": "frisky.cluster",
    "FriskyExecutor": "frisky.executor",
    "Future": "frisky.future",
    "wait": "frisky.future",
    "as_completed": "frisky.future",
    "ALL_COMPLETED": "frisky.future",
    "FIRST_COMPLETED": "frisky.future",
    "FIRST_EXCEPTION": "frisky.future",
    "SerializationError": "frisky.serialize",
}

__all__ = [
    "ALL_COMPLETED", "Client", "DataLost", "FIRST_COMPLETED", "FIRST_EXCEPTION", "FriskyError",
    "FriskyExecutor", "Future", "KilledWorker", "LocalCluster", "SchedulerGone", "SerializationError",
    "as_completed", "wait",
]

if TYPE_CHECKING:  # pragma: no cover
    from frisky.client import Client
    from frisky.cluster import LocalCluster
    from frisky.errors import DataLost, FriskyError, KilledWorker, SchedulerGone
    from frisky.executor import FriskyExecutor
    from frisky.future import (
        ALL_COMPLETED,
        FIRST_COMPLETED,
        FIRST_EXCEPTION,
        Future,
        as_completed,
        wait,
    )
    from frisky.serialize import SerializationError


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'frisky' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
