"""glibc malloc settings for worker processes.

A fixed mmap threshold just above a streamed TCP chunk (``compression.STREAM_CHUNK``)
plus ZeroMQ's header: each chunk ZeroMQ receives then reuses heap memory the previous one
freed, instead of faulting in a fresh mapping (incompressible data over loopback went
1.1 -> 2.5 GB/s), while anything larger still goes back to the OS the moment it is freed.
Fixed, because glibc's own threshold climbs to 32 MiB after the first large free and then
keeps such buffers in the heap, where the worker's RSS would drift past its limit.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from frisky.compression import STREAM_CHUNK

MMAP_THRESHOLD = STREAM_CHUNK + (64 << 10)
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def set_env(env: dict) -> None:
    """Have processes started with ``env`` use the threshold from their first allocation."""
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))


def set_mmap_threshold() -> bool:
    """Set the threshold in this process (a worker started by hand); False if not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError, TypeError):
        return False
