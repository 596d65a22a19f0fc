"""blosc2 compression into caller-owned buffers, without the GIL and without a global lock.

The ``blosc2`` module allocates (and zero-fills) a new output for every call, copies the result
out again and holds the GIL throughout unless ``set_releasegil`` is flipped process-wide: on
4 MiB chunks of ``arange`` float64 that costs twice the CPU of the codec itself. The C library
it ships, called through ctypes, writes straight into our buffers and releases the GIL for the
whole call. Its chunks are ordinary blosc2 chunks, so ``blosc2.decompress`` reads them, and
vice versa.

Every call runs on a context of its own thread (``blosc2_compress_ctx`` /
``blosc2_decompress_ctx``), made once per thread and setting and kept: the library's global
context serialises its callers, so the spill writer and a TCP stream compressing at the same
time would wait for each other.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import OrderedDict
from typing import Any

from frisky.data.buffers import address

OVERHEAD = 32  # BLOSC2_MAX_OVERHEAD: a chunk never exceeds the input by more than this
NOSHUFFLE, SHUFFLE = 0, 1  # BLOSC_NOSHUFFLE, BLOSC_SHUFFLE
_CODES = {1: 1, 2: 5}  # frisky.data.compression.LZ4 / ZSTD -> BLOSC_LZ4 / BLOSC_ZSTD
_MAX_FILTERS = 6  # BLOSC2_MAX_FILTERS
_FORWARD_COMPAT_SPLIT = 4  # BLOSC_FORWARD_COMPAT_SPLIT
_HEADER = 16  # BLOSC_MIN_HEADER_LENGTH: version, flags, typesize, nbytes, blocksize, cbytes
_CONTEXTS_PER_THREAD = 16  # (codec, typesize, ...) settings a thread keeps a context for

# Threads per call, unless a caller says otherwise. A second thread doubles the spill
# codecs here (arange writes 3.8 -> 5.6 GB/s); a TCP stream asks for one instead, since
# its sender and receiver already keep both cores busy (two each lost 15%).
THREADS = max(1, min(4, os.cpu_count() or 1))


class _CParams(ctypes.Structure):
    """``blosc2_cparams`` (blosc2.h, C-Blosc2 2.x/3.x)."""

    _fields_ = [
        ("compcode", ctypes.c_uint8),
        ("compcode_meta", ctypes.c_uint8),
        ("clevel", ctypes.c_uint8),
        ("use_dict", ctypes.c_int),
        ("typesize", ctypes.c_int32),
        ("nthreads", ctypes.c_int16),
        ("blocksize", ctypes.c_int32),
        ("splitmode", ctypes.c_int32),
        ("schunk", ctypes.c_void_p),
        ("filters", ctypes.c_uint8 * _MAX_FILTERS),
        ("filters_meta", ctypes.c_uint8 * _MAX_FILTERS),
        ("prefilter", ctypes.c_void_p),
        ("preparams", ctypes.c_void_p),
        ("tuner_params", ctypes.c_void_p),
        ("tuner_id", ctypes.c_int),
        ("instr_codec", ctypes.c_bool),
        ("codec_params", ctypes.c_void_p),
        ("filter_params", ctypes.c_void_p * _MAX_FILTERS),
    ]


class _DParams(ctypes.Structure):
    """``blosc2_dparams``."""

    _fields_ = [
        ("nthreads", ctypes.c_int16),
        ("schunk", ctypes.c_void_p),
        ("postfilter", ctypes.c_void_p),
        ("postparams", ctypes.c_void_p),
        ("typesize", ctypes.c_int32),
    ]


_lib: Any = None
_load_lock = threading.Lock()
_tls = threading.local()


class _Context:
    """A blosc2 context owned by one thread; freed with it."""

    __slots__ = ("ptr", "lib", "block")

    def __init__(self, lib: Any, ptr: int) -> None:
        self.lib = lib
        self.ptr = ptr
        self.block = 0  # the block size a compression context settled on (see compress_into)

    def __del__(self) -> None:
        if self.ptr:
            self.lib.blosc2_free_ctx(self.ptr)
            self.ptr = 0


def _load() -> Any:
    global _lib
    if _lib is None:
        with _load_lock:
            if _lib is None:
                _lib = _open() or False
    return _lib or None


def _open() -> Any:
    try:
        lib = ctypes.CDLL(_library_path())
        lib.blosc2_init()
        ptr, c_i32 = ctypes.c_void_p, ctypes.c_int32
        lib.blosc2_create_cctx.argtypes = [_CParams]
        lib.blosc2_create_cctx.restype = ptr
        lib.blosc2_create_dctx.argtypes = [_DParams]
        lib.blosc2_create_dctx.restype = ptr
        lib.blosc2_free_ctx.argtypes = [ptr]
        lib.blosc2_free_ctx.restype = None
        lib.blosc2_compress_ctx.argtypes = [ptr, ptr, c_i32, ptr, c_i32]
        lib.blosc2_decompress_ctx.argtypes = [ptr, ptr, c_i32, ptr, c_i32]
    except (ImportError, OSError, AttributeError):
        return None
    return lib if _works(lib) else None


def _library_path() -> str:
    """libblosc2.so inside the installed blosc2 package, found without importing the package:
    ``import blosc2`` costs ~30 MiB of RSS in every process that compresses."""
    import importlib.util

    spec = importlib.util.find_spec("blosc2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("blosc2 is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "lib", "libblosc2.so")


def _works(lib: Any) -> bool:
    """Round-trip a small buffer: a library whose structs differ from ours is not used."""
    src = (ctypes.c_uint8 * 4096)(*(i % 7 for i in range(4096)))
    dst = (ctypes.c_uint8 * (4096 + OVERHEAD))()
    back = (ctypes.c_uint8 * 4096)()
    c = _new_cctx(lib, 1, 8, 1, 1, SHUFFLE)
    d = _new_dctx(lib, 1)
    if c is None or d is None:
        return False
    n = lib.blosc2_compress_ctx(c.ptr, src, 4096, dst, 4096 + OVERHEAD)
    return 0 < n < 4096 and lib.blosc2_decompress_ctx(d.ptr, dst, n, back, 4096) == 4096 \
        and bytes(back) == bytes(src)


def _new_cctx(lib: Any, code: int, typesize: int, clevel: int, nthreads: int, shuffle: int) -> _Context | None:
    p = _CParams()
    p.compcode = code
    p.clevel = clevel
    p.typesize = typesize
    p.nthreads = nthreads
    p.splitmode = _FORWARD_COMPAT_SPLIT
    p.filters[_MAX_FILTERS - 1] = shuffle
    ptr = lib.blosc2_create_cctx(p)
    return _Context(lib, ptr) if ptr else None


def _new_dctx(lib: Any, nthreads: int) -> _Context | None:
    p = _DParams()
    p.nthreads = nthreads
    p.typesize = 8
    ptr = lib.blosc2_create_dctx(p)
    return _Context(lib, ptr) if ptr else None


def _cache() -> OrderedDict:
    cache = getattr(_tls, "contexts", None)
    if cache is None:
        cache = _tls.contexts = OrderedDict()
    return cache


def _keep(key: tuple, ctx: _Context) -> None:
    cache = _cache()
    cache[key] = ctx
    if len(cache) > _CONTEXTS_PER_THREAD:
        cache.popitem(last=False)  # freed by its __del__


def _context(key: tuple, make: Any) -> _Context:
    """This thread's context for ``key`` (made by ``make()`` the first time)."""
    cache = _cache()
    ctx = cache.get(key)
    if ctx is None:
        ctx = make()
        if ctx is None:
            raise ValueError(f"blosc2 could not create a context for {key}")
        _keep(key, ctx)
    else:
        cache.move_to_end(key)
    return ctx


def available() -> bool:
    """Whether the blosc2 C library could be loaded (and speaks our context structs)."""
    return _load() is not None




def compress_into(src: Any, dst: Any, base: int, typesize: int, clevel: int = 1,
                  nthreads: int | None = None, shuffle: bool = True) -> int:
    """Compress ``src`` (byte-shuffled first, unless ``shuffle`` is False) into ``dst``
    (writable); return the bytes written.

    ``base`` is ``frisky.data.compression.LZ4`` or ``ZSTD``; ``dst`` needs ``len(src) + OVERHEAD``
    bytes to be sure to fit; ``nthreads`` defaults to ``THREADS``. Raises ValueError on a
    codec error or when it does not fit.
    """
    lib = _load()
    if lib is None:
        raise ValueError("the blosc2 library is not available")
    _s, sp, sn = address(src)
    _d, dp, dn = address(dst)
    if sn >= 1 << 31:
        raise ValueError("blosc2 chunks hold under 2 GiB")
    typesize = typesize if 0 < typesize <= 255 and sn % typesize == 0 else 1
    code = _CODES[base & 3]
    n_threads = nthreads or THREADS
    filt = SHUFFLE if shuffle and typesize > 1 else NOSHUFFLE
    key = ("c", code, typesize, clevel, n_threads, filt)
    # A compression context keeps the block size of its first call and forces it on every
    # later one (blosc2_compress_ctx passes ctx->blocksize back in as the user's choice), so
    # a context only serves buffers at least as large as its settled block size; a smaller
    # buffer gets a context of its own (it fits in about one block: nothing to share).
    ctx = _cache().get(key)
    if ctx is not None and sn >= ctx.block:
        _cache().move_to_end(key)
        fresh = False
    else:
        ctx = _new_cctx(lib, code, typesize, clevel, n_threads, filt)
        if ctx is None:
            raise ValueError(f"blosc2 could not create a context for {key}")
        fresh = True
    n = lib.blosc2_compress_ctx(ctx.ptr, sp, sn, dp, min(dn, (1 << 31) - 1))
    if n <= 0:
        raise ValueError(f"blosc2 could not compress {sn} bytes into {dn} (code {n})")
    if fresh and n >= _HEADER:
        block = int.from_bytes(_d[8:12].tobytes(), "little")  # the chunk header's blocksize
        if 0 < block < sn - sn % typesize:  # chosen for the codec, not cut down to this buffer
            ctx.block = block
            _keep(key, ctx)
    return n


def compress(src: Any, base: int, typesize: int, nthreads: int | None = None,
             shuffle: bool = True) -> memoryview:
    """Compress ``src`` into fresh, uninitialised memory (only the pages the output touches
    get faulted in); returns a view of the bytes written."""
    import numpy as np

    out = np.empty(memoryview(src).nbytes + OVERHEAD, np.uint8)
    return memoryview(out[:compress_into(src, out, base, typesize, nthreads=nthreads, shuffle=shuffle)])


def decompress_into(src: Any, dst: Any, nthreads: int | None = None) -> int:
    """Decompress the blosc2 chunk ``src`` into ``dst`` (exactly its size); ValueError if corrupt."""
    lib = _load()
    if lib is None:
        raise ValueError("the blosc2 library is not available")
    _s, sp, sn = address(src)
    _d, dp, dn = address(dst)
    n_threads = nthreads or THREADS
    ctx = _context(("d", n_threads), lambda: _new_dctx(lib, n_threads))
    n = lib.blosc2_decompress_ctx(ctx.ptr, sp, sn, dp, dn)
    if n != dn:
        raise ValueError(f"corrupt blosc2 chunk: decoded {n} bytes, expected {dn}")
    return n
