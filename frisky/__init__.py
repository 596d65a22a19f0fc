"""Frisky: a fast, Dask-like parallel executor for Python.

``import frisky`` stays cheap: names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "Client": "frisky.client.client",
    "FriskyError": "frisky.errors",
    "KilledWorker": "frisky.errors",
    "DataLost": "frisky.errors",
    "SchedulerGone": "frisky.errors",
    "LocalCluster": "frisky.deploy.cluster",
    "FriskyExecutor": "frisky.client.executor",
    "Future": "frisky.client.future",
    "wait": "frisky.client.future",
    "as_completed": "frisky.client.future",
    "ALL_COMPLETED": "frisky.client.future",
    "FIRST_COMPLETED": "frisky.client.future",
    "FIRST_EXCEPTION": "frisky.client.future",
    "SerializationError": "frisky.data.serialize",
}

__all__ = [
    "ALL_COMPLETED", "Client", "DataLost", "FIRST_COMPLETED", "FIRST_EXCEPTION", "FriskyError",
    "FriskyExecutor", "Future", "KilledWorker", "LocalCluster", "SchedulerGone", "SerializationError",
    "as_completed", "wait",
]

if TYPE_CHECKING:  # pragma: no cover
    from frisky.client.client import Client
    from frisky.client.executor import FriskyExecutor
    from frisky.client.future import (
        ALL_COMPLETED,
        FIRST_COMPLETED,
        FIRST_EXCEPTION,
        Future,
        as_completed,
        wait,
    )
    from frisky.data.serialize import SerializationError
    from frisky.deploy.cluster import LocalCluster
    from frisky.errors import DataLost, FriskyError, KilledWorker, SchedulerGone


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'frisky' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
