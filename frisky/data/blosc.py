"""blosc2 compression into caller-owned buffers, without the GIL.

The ``blosc2`` module allocates (and zero-fills) a new output for every call, copies the result
out again and holds the GIL throughout unless ``set_releasegil`` is flipped process-wide: on
4 MiB chunks of ``arange`` float64 that costs twice the CPU of the codec itself. The C library
it ships, called through ctypes, writes straight into our buffers and releases the GIL for the
whole call. Its chunks are ordinary blosc2 chunks, so ``blosc2.decompress`` (and
:func:`frisky.data.compression.decompress` with the ``BLOSC`` flag) reads them, and vice versa.

The library keeps its own global context (apart from the module's), whose calls it serialises.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

from frisky.data.buffers import address

OVERHEAD = 32  # BLOSC2_MAX_OVERHEAD: a chunk never exceeds the input by more than this
SHUFFLE = 1  # BLOSC_SHUFFLE
_NAMES = {1: b"lz4", 2: b"zstd"}  # frisky.data.compression.LZ4 / ZSTD

# Threads per call, unless a caller says otherwise. A second thread doubles the spill
# codecs here (arange writes 3.8 -> 5.6 GB/s); a TCP stream asks for one instead, since
# its sender and receiver already keep both cores busy (two each lost 15%).
THREADS = max(1, min(4, os.cpu_count() or 1))

_lib: Any = None
# compressor and thread count are global settings: set them and run the call atomically
# (the library serialises calls on its global context anyway)
_lock = threading.Lock()
_codec = [None]
_threads = [0]


def _load() -> Any:
    global _lib
    if _lib is None:
        try:
            import blosc2

            path = os.path.join(os.path.dirname(blosc2.__file__), "lib", "libblosc2.so")
            lib = ctypes.CDLL(path)
            lib.blosc2_init()
        except (ImportError, OSError, AttributeError):
            _lib = False
            return None
        c_int, c_i32, ptr = ctypes.c_int, ctypes.c_int32, ctypes.c_void_p
        lib.blosc2_compress.argtypes = [c_int, c_int, c_i32, ptr, c_i32, ptr, c_i32]
        lib.blosc2_decompress.argtypes = [ptr, c_i32, ptr, c_i32]
        lib.blosc1_set_compressor.argtypes = [ctypes.c_char_p]
        lib.blosc2_set_nthreads.argtypes = [ctypes.c_int16]
        _lib = lib
    return _lib or None


def available() -> bool:
    """Whether the blosc2 C library could be loaded."""
    return _load() is not None


def _set_threads(lib: Any, nthreads: int | None) -> None:
    """Under ``_lock``: make the next call use ``nthreads`` (default ``THREADS``)."""
    n = nthreads or THREADS
    if _threads[0] != n:
        lib.blosc2_set_nthreads(n)
        _threads[0] = n


def compress_into(src: Any, dst: Any, base: int, typesize: int, clevel: int = 1,
                  nthreads: int | None = None) -> int:
    """Shuffle and compress ``src`` into ``dst`` (writable); return the bytes written.

    ``base`` is ``frisky.data.compression.LZ4`` or ``ZSTD``; ``dst`` needs ``len(src) + OVERHEAD``
    bytes to be sure to fit; ``nthreads`` defaults to ``THREADS``. Raises ValueError on a
    codec error or when it does not fit.
    """
    lib = _load()
    _s, sp, sn = address(src)
    _d, dp, dn = address(dst)
    if sn >= 1 << 31:
        raise ValueError("blosc2 chunks hold under 2 GiB")
    typesize = typesize if 0 < typesize <= 255 and sn % typesize == 0 else 1
    name = _NAMES[base & 3]
    with _lock:
        if _codec[0] != name:
            lib.blosc1_set_compressor(name)
            _codec[0] = name
        _set_threads(lib, nthreads)
        n = lib.blosc2_compress(clevel, SHUFFLE, typesize, sp, sn, dp, min(dn, (1 << 31) - 1))
    if n <= 0:
        raise ValueError(f"blosc2 could not compress {sn} bytes into {dn} (code {n})")
    return n


def compress(src: Any, base: int, typesize: int, nthreads: int | None = None) -> memoryview:
    """Shuffle and compress ``src`` into fresh, uninitialised memory (only the pages the
    output touches get faulted in); returns a view of the bytes written."""
    import numpy as np

    out = np.empty(memoryview(src).nbytes + OVERHEAD, np.uint8)
    return memoryview(out[:compress_into(src, out, base, typesize, nthreads=nthreads)])


def decompress_into(src: Any, dst: Any, nthreads: int | None = None) -> int:
    """Decompress the blosc2 chunk ``src`` into ``dst`` (exactly its size); ValueError if corrupt."""
    lib = _load()
    _s, sp, sn = address(src)
    _d, dp, dn = address(dst)
    with _lock:
        _set_threads(lib, nthreads)
        n = lib.blosc2_decompress(sp, sn, dp, dn)
    if n != dn:
        raise ValueError(f"corrupt blosc2 chunk: decoded {n} bytes, expected {dn}")
    return n
