"""Module-level (hence picklable) helpers for tests/test_cpython_futures.py.

They are the helper functions of CPython's Lib/test/test_concurrent_futures/
(executor.py, test_wait.py, test_shutdown.py), moved into an importable module so
that Frisky worker processes can unpickle them by reference; plus ``FileEvent``, a
stand-in for the ``multiprocessing.Manager().Event()`` that CPython's process-pool
tests use (Manager proxies cannot authenticate from Frisky's workers, which are not
started by ``multiprocessing``).

Adapted from CPython (https://github.com/python/cpython), Copyright (c) 2001-2024
Python Software Foundation; licensed under the PSF License Agreement v2.
"""

# CPython's code is kept as written, old-style formatting included
# ruff: noqa: UP004, UP039

from __future__ import annotations

import os
import sys
import time


def mul(x, y):
    return x * y


def capture(*args, **kwargs):
    return args, kwargs


class MyObject(object):
    def my_method(self):
        pass


def make_dummy_object(_):
    return MyObject()


def wait_and_raise(e):
    e.wait()
    raise Exception('this is an exception')


def sleep_and_print(t, msg):
    time.sleep(t)
    print(msg)
    sys.stdout.flush()


class FileEvent:
    """A picklable event shared by processes: it is set once ``path`` exists.

    ``wait`` polls (inside the task that waits); ``set`` never blocks.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def set(self) -> None:
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        except FileNotFoundError:  # the test is over and removed its directory
            pass

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not os.path.exists(self.path):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def __repr__(self) -> str:
        return f"<FileEvent {self.path} {'set' if self.is_set() else 'unset'}>"


class EventfulGCObj():
    """test_process_pool.py's EventfulGCObj, given an event instead of a Manager."""

    def __init__(self, event):
        self.event = event

    def __del__(self):
        self.event.set()


def raise_runtime_error_123():
    """ProcessPoolExecutorTest._test_traceback, as a module-level function."""
    raise RuntimeError(123) # some comment
