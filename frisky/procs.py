"""Small process helpers: liveness, memory use, the C library, dying with a parent."""

from __future__ import annotations

import os
from typing import Any


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (owned by us or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the process that started it dies."""
    import signal

    prctl = getattr(libc(), "prctl", None)
    if prctl is not None:  # Linux only: elsewhere there is nothing to ask for
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss(pid: int | None = None) -> int | None:
    """Private resident memory of ``pid`` (default: this process) in bytes, or None if it
    is gone. Shared pages are left out: the shared-memory arena stays mapped in every
    process of the host, its pages warm for reuse, and the values it holds are counted
    as their owner's managed memory already.

    Cheap: one small read of ``/proc``; without ``/proc`` (not Linux) psutil answers."""
    try:
        with open(f"/proc/{'self' if pid is None else pid}/statm", "rb") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * _PAGE
    except FileNotFoundError:
        if os.path.isdir("/proc"):
            return None  # gone
    except (OSError, ValueError, IndexError):
        return None
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


_libc: Any = None


def libc() -> Any:
    """The C library through ctypes (loaded once), or None where it cannot be loaded."""
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    return _libc or None


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc keeps it otherwise, and RSS lies)."""
    lib = libc()
    trim = getattr(lib, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)
