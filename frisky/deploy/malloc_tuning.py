"""glibc malloc settings for worker processes (and the fork server they come from).

- A fixed mmap threshold just above a streamed TCP chunk (``compression.STREAM_CHUNK``)
  plus ZeroMQ's header: each chunk ZeroMQ receives then reuses heap memory the previous
  one freed, instead of faulting in a fresh mapping (incompressible data over loopback
  went 1.1 -> 2.5 GB/s), while anything larger still goes back to the OS the moment it is
  freed. Fixed, because glibc's own threshold climbs to 32 MiB after the first large free
  and then keeps such buffers in the heap, where the worker's RSS would drift past its limit.
- Transparent huge pages for those larger, mmapped allocations: a large message ZeroMQ
  receives lands in a fresh malloc'd buffer, and page-faulting it in 4 KiB pages costs more
  than the copy from the socket (~2x the receive CPU here), as it would for any large
  buffer a task allocates. numpy does the same for its own arrays.
"""

from __future__ import annotations

from frisky.data.compression import STREAM_CHUNK

MMAP_THRESHOLD = STREAM_CHUNK + (64 << 10)
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
_HUGEPAGES = "glibc.malloc.hugetlb=1"


def set_env(env: dict) -> None:
    """Have processes started with ``env`` use both settings from their first allocation."""
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    current = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" not in current:
        env["GLIBC_TUNABLES"] = f"{current}:{_HUGEPAGES}" if current else _HUGEPAGES


def set_mmap_threshold() -> bool:
    """Set the threshold in this process (a worker started by hand); False if not glibc.
    (Huge pages can only be asked for in the environment, before the process starts.)"""
    from frisky import procs

    mallopt = getattr(procs.libc(), "mallopt", None)  # glibc only
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
