"""Buffer codecs (none / lz4 / zstd, optionally byte-shuffled), chosen by sampling.

Shared by the TCP path and the spill writer. A codec id is ``NONE``, ``LZ4`` or ``ZSTD``,
possibly OR-ed with ``SHUFFLE``; ``BLOSC`` is set on every id :func:`choose` returns (a
payload is always blosc2) and may be left off by callers. Callers keep
``(codec, nbytes, itemsize)`` next to the payload.

There is one path: every compressed payload is a blosc2 chunk, shuffled (``SHUFFLE``) and
compressed in C on this thread's own context (:mod:`frisky.data.blosc`), so chunks carry
their own sizes and checks. A payload over ``_BLOSC_CHUNK`` bytes is a table of
little-endian uint32 chunk sizes followed by the chunks.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

from frisky import config
from frisky.data.buffers import byte_view
from frisky.telemetry import now, span

NONE, LZ4, ZSTD = 0, 1, 2
SHUFFLE = 4
BLOSC = 8  # a blosc2 chunk: true of every compressed payload, kept so old ids stay valid
_VALID = frozenset({NONE} | {base | s | b for base in (LZ4, ZSTD) for s in (0, SHUFFLE) for b in (0, BLOSC)})
_BLOSC_CHUNK = 1 << 30  # blosc2 takes up to 2 GiB in one call
_NAMES = {"lz4": LZ4, "zstd": ZSTD}

CHUNK = 1 << 20  # the reference size of tests and callers that cut buffers themselves
MIN_SIZE = 1024  # below this, framing and call overhead outweigh any saving
SAMPLE = 64 * 1024
N_SAMPLES = 3
MAX_RATIO = 0.9  # compressed/original above this does not pay (dask uses the same bound)
# A shuffle adds two passes over memory (shuffle + unshuffle), so a shuffled codec must save
# more: this keeps random floats (whose exponent bytes shuffle to ~0.85) uncompressed.
MAX_RATIO_SHUFFLED = 0.8
SHUFFLE_GAIN = 0.9  # shuffle only when it shrinks the sample by another 10% at least
MAX_SHUFFLE_ITEMSIZE = 255  # blosc2's typesize is a byte

_tls = threading.local()  # per-thread scratch for compressed chunks


# ---------------------------------------------------------------------------- buffers


def _empty(size: int) -> memoryview:
    """A writable buffer left uninitialised: bytearray(n) would memset it first, for nothing."""
    import numpy as np

    return memoryview(np.empty(size, np.uint8))


def _scratch(size: int) -> Any:
    import numpy as np

    buf = getattr(_tls, "scratch", None)
    if buf is None or len(buf) < size:
        buf = _tls.scratch = np.empty(max(size, CHUNK), np.uint8)
    return buf[:size]


# ----------------------------------------------------------------------------- codecs

_blosc2: Any = None


def _blosc():
    """The blosc2 module, or None where it is not installed (then nothing is compressed)."""
    global _blosc2
    if _blosc2 is None:
        try:
            import blosc2

            _blosc2 = blosc2
        except ImportError:
            _blosc2 = False
    return _blosc2 or None


def _available() -> bool:
    """Whether blosc2 can compress here: its C library (loaded without importing the Python
    package, which costs ~30 MiB of RSS), else the package itself."""
    from frisky.data import blosc

    return blosc.available() or _blosc() is not None


def preload() -> None:
    """Load blosc2 in the background, so a first transfer does not wait for it."""
    if _blosc2 is None:
        threading.Thread(target=_available, name="frisky-preload-blosc2", daemon=True).start()


_SCRATCH_MAX = 8 << 20  # blosc2 chunks up to this size compress into the thread's scratch


def _blosc_compress(piece: memoryview, codec: int, itemsize: int, nthreads: int | None = None) -> bytes | memoryview:
    """One blosc2 chunk: through the C library when it loads (no GIL held, no zero-filled
    output, no lock), else through the module.

    A chunk up to ``_SCRATCH_MAX`` compresses into this thread's scratch buffer and leaves
    as bytes of its compressed size: a fresh output per chunk cost an mmap, page faults and
    an munmap each (a TCP stream of compressible data ran 20% faster without them).
    """
    from frisky.data import blosc

    shuffle = bool(codec & SHUFFLE)
    if blosc.available():
        if piece.nbytes <= _SCRATCH_MAX:
            out = _scratch(piece.nbytes + blosc.OVERHEAD)
            n = blosc.compress_into(piece, out, codec, itemsize, nthreads=nthreads, shuffle=shuffle)
            return out[:n].tobytes()
        return blosc.compress(piece, codec, itemsize, nthreads, shuffle=shuffle)
    b = _blosc()
    name = b.Codec.LZ4 if codec & 3 == LZ4 else b.Codec.ZSTD
    # blosc2 needs whole items: an odd length is compressed as bytes (no effective shuffle)
    typesize = itemsize if 0 < itemsize <= 255 and piece.nbytes % itemsize == 0 else 1
    filt = b.Filter.SHUFFLE if shuffle else b.Filter.NOSHUFFLE
    return b.compress(piece, typesize=typesize, clevel=1, filter=filt, codec=name)


def _check(codec: int, itemsize: int) -> None:
    if codec not in _VALID:
        raise ValueError(f"unknown codec id {codec!r}")
    if itemsize < 1:
        raise ValueError(f"itemsize must be positive, got {itemsize!r}")


# ------------------------------------------------------------------------------ API


def preference(mode: str | None = None, default: str = "lz4") -> str | None:
    """The codec name to ``prefer`` under the ``compression`` setting ``mode`` (read from
    config when None): ``default`` for ``auto``, the named codec for ``lz4``/``zstd``, None
    for ``none``. Callers resolve this once, when they are created, not per buffer."""
    if mode is None:
        mode = config.get("compression")
    mode = str(mode).lower()
    if mode == "none":
        return None
    if mode == "auto":
        if default not in _NAMES:
            raise ValueError(f"default must be 'lz4' or 'zstd', got {default!r}")
        return default
    if mode in _NAMES:
        return mode
    raise ValueError(f"compression must be auto, none, lz4 or zstd, got {mode!r}")


def _choose(mv: memoryview, itemsize: int, prefer: str) -> tuple[int, bytes | None]:
    """:func:`choose`, plus the compressed payload when the sample was the whole buffer."""
    base = _NAMES.get(prefer)
    if base is None:
        raise ValueError(f"prefer must be 'lz4' or 'zstd', got {prefer!r}")
    n = mv.nbytes
    if n < MIN_SIZE or not _available():
        return NONE, None
    whole = n <= N_SAMPLES * SAMPLE
    if whole:
        pieces = [mv]
    else:
        # Start, middle and end, aligned to items so a shuffled sample matches the real layout.
        size = max(itemsize, SAMPLE - SAMPLE % itemsize)
        starts = (0, (n - size) // 2, n - size)
        pieces = [mv[s - s % itemsize :][:size] for s in starts]
    total = sum(p.nbytes for p in pieces)
    candidates = [base | BLOSC]
    if 1 < itemsize <= MAX_SHUFFLE_ITEMSIZE:
        candidates.append(base | SHUFFLE | BLOSC)
    best, best_ratio, best_out = NONE, 1.0, None
    for codec in candidates:
        # as compress() would: a whole-buffer sample is then its payload, byte for byte
        outs = [_blosc_compress(p, codec, itemsize) for p in pieces]
        ratio = sum(map(len, outs)) / total
        limit = MAX_RATIO_SHUFFLED if codec & SHUFFLE else MAX_RATIO
        if codec & SHUFFLE and best != NONE:
            limit = min(limit, best_ratio * SHUFFLE_GAIN)
        if ratio <= limit:
            best, best_ratio, best_out = codec, ratio, outs[0]
    # A whole-buffer sample is exactly the payload compress() would make.
    return best, best_out if whole else None


def choose(buf: Any, itemsize: int = 1, prefer: str = "lz4") -> int:
    """Return the codec id for ``buf``, judged on 3 x 64 KiB samples (the whole buffer if small).

    ``NONE`` when compression does not pay (ratio above 0.9, 0.8 with a shuffle, or under
    1 KiB). ``prefer`` is ``"lz4"`` (network) or ``"zstd"`` (level 1: disk, slow links);
    callers map the ``compression`` setting to it once, with :func:`preference`.
    """
    return _choose(byte_view(buf), itemsize, prefer)[0]


def compress(buf: Any, codec: int, itemsize: int = 1) -> bytes | memoryview:
    """Compress ``buf`` with ``codec``; ``NONE`` returns a byte view of ``buf`` without copying."""
    _check(codec, itemsize)
    mv = byte_view(buf)
    if codec == NONE:
        return mv
    if not _available():
        raise ValueError("compression needs blosc2, which is not installed here")
    n = mv.nbytes
    if n <= _BLOSC_CHUNK:
        return _blosc_compress(mv, codec, itemsize)
    step = _BLOSC_CHUNK - _BLOSC_CHUNK % itemsize
    blocks = [_blosc_compress(mv[off : off + step], codec, itemsize) for off in range(0, n, step)]
    header = struct.pack(f"<{len(blocks)}I", *map(len, blocks))
    return b"".join([header, *blocks])


def decompress(
    data: Any, codec: int, nbytes: int, itemsize: int = 1
) -> bytes | bytearray | memoryview:
    """Inverse of :func:`compress`; ``nbytes`` is the original length. Raises ValueError if corrupt."""
    _check(codec, itemsize)
    mv = byte_view(data)
    if codec == NONE:
        if mv.nbytes != nbytes:
            raise ValueError(f"expected {nbytes} bytes, got {mv.nbytes}")
        return mv
    try:
        # into numpy memory (huge pages where the kernel allows): a fresh bytes object
        # of this size costs more in page faults than the decompression itself
        out = _empty(nbytes)
        if nbytes <= _BLOSC_CHUNK:
            _blosc_into(mv, out)
            return out
        step = _BLOSC_CHUNK - _BLOSC_CHUNK % itemsize
        sizes = _chunk_table(mv, nbytes, step)
        pos = 4 * len(sizes)
        for i, csize in enumerate(sizes):
            off = i * step
            _blosc_into(mv[pos : pos + csize], out[off : off + step])
            pos += csize
        return out
    except ValueError:
        raise
    except Exception as e:  # blosc2 errors: one exception type for callers
        raise ValueError(f"corrupt payload for codec {codec}: {e}") from e


def _chunk_table(mv: memoryview, nbytes: int, step: int) -> tuple[int, ...]:
    """The compressed sizes that head a payload of ``nbytes`` cut into ``step``-byte chunks."""
    count = -(-nbytes // step)
    if mv.nbytes < 4 * count:
        raise ValueError("payload shorter than its chunk table")
    sizes = struct.unpack_from(f"<{count}I", mv)
    if 4 * count + sum(sizes) != mv.nbytes:
        raise ValueError("chunk table does not match the payload length")
    return sizes


def _blosc_into(mv: memoryview, out: memoryview, nthreads: int | None = None) -> None:
    """Decompress one blosc2 chunk into ``out``, which it must fill exactly: through the C
    library when it loads, else through the module."""
    from frisky.data import blosc

    if blosc.available():
        blosc.decompress_into(mv, out, nthreads)
        return
    b = _blosc()
    if b is None:
        raise ValueError("data compressed with blosc2, which is not installed here")
    # blosc2 trusts dst to be large enough: check the chunk's own header first
    nbytes, cbytes, _ = b.get_cbuffer_sizes(mv)
    if nbytes != out.nbytes or cbytes != mv.nbytes:
        raise ValueError(f"blosc2 chunk of {nbytes}/{cbytes} bytes, expected {out.nbytes}/{mv.nbytes}")
    if nbytes:  # blosc2 refuses an empty dst
        b.decompress(mv, dst=out)


def encode(
    buf: Any, itemsize: int = 1, prefer: str = "lz4", *, span_name: str = "tcp.send.compress"
) -> tuple[int, bytes | memoryview]:
    """``choose`` then ``compress``; returns ``(codec, payload)`` and records ``span_name``."""
    t0 = now()
    mv = byte_view(buf)
    codec, payload = _choose(mv, itemsize, prefer)
    if codec == NONE:
        if mv.nbytes >= MIN_SIZE:
            span(span_name, t0)
        return NONE, mv
    if payload is None:
        payload = compress(mv, codec, itemsize)
        limit = MAX_RATIO_SHUFFLED if codec & SHUFFLE else MAX_RATIO
        if len(payload) > limit * mv.nbytes:  # the samples lied: don't make the receiver pay too
            codec, payload = NONE, mv
    span(span_name, t0)
    return codec, payload


def decode(
    codec: int, data: Any, nbytes: int, itemsize: int = 1, *, span_name: str = "tcp.recv.decompress"
) -> bytes | bytearray | memoryview:
    """Inverse of :func:`encode`; records ``span_name`` unless nothing was compressed."""
    if codec == NONE:
        return decompress(data, codec, nbytes, itemsize)
    t0 = now()
    out = decompress(data, codec, nbytes, itemsize)
    span(span_name, t0)
    return out


# -------------------------------------------------------------------- streamed chunks
# A large buffer crosses TCP as a run of chunks, each its own message, so the sender
# compresses chunk i+1 while chunk i is on the wire and the receiver decompresses each
# straight into the final buffer while later ones still arrive. A chunk whose compressed
# form is not smaller travels raw; its length (equal to the raw length) says so.

STREAM_CHUNK = 1 << 20  # the smallest chunk: ~0.2 ms of blosc2, a short pipeline start
STREAM_CHUNK_MAX = 4 << 20  # the largest: a 256 MiB array went 10% faster in 4 MiB chunks than in 1
STREAM_CHUNKS = 64  # aim for this many chunks: enough to overlap, few enough to amortize each message


def stream_chunk(itemsize: int, nbytes: int = 0, codec: int = LZ4) -> int:
    """Raw bytes per streamed chunk of a buffer of ``nbytes``: 1-4 MiB, whole items, so each
    chunk shuffles on its own. Sender and receiver both derive it from the descriptor.

    Uncompressed (``NONE``) chunks are always ``STREAM_CHUNK``: workers allocate buffers up to
    that size from the heap (see ``frisky.deploy.malloc_tuning``), so ZeroMQ receives each chunk into warm
    memory; over loopback 1 MiB went 2.5 GB/s, 4 MiB 2.3, one 256 MiB frame 1.1-1.8."""
    if codec == NONE:
        step = STREAM_CHUNK
    else:
        step = min(STREAM_CHUNK_MAX, max(STREAM_CHUNK, nbytes // STREAM_CHUNKS))
    return max(itemsize, step - step % itemsize)


def compress_chunk(piece: memoryview, codec: int, itemsize: int = 1,
                   nthreads: int | None = None) -> bytes | memoryview:
    """One streamed chunk: compressed with ``codec``, or ``piece`` itself if that is no smaller.
    ``nthreads``: blosc2 threads (default ``frisky.data.blosc.THREADS``)."""
    _check(codec, itemsize)
    if codec == NONE:
        return piece
    out = _blosc_compress(piece, codec, itemsize, nthreads)
    return out if len(out) < piece.nbytes else piece


def decompress_chunk(data: Any, codec: int, out: memoryview, itemsize: int = 1,
                     nthreads: int | None = None) -> None:
    """Write one streamed chunk into ``out`` (its exact raw size). Raises ValueError if corrupt."""
    mv = byte_view(data)
    if mv.nbytes == out.nbytes:
        out[:] = mv
        return
    _check(codec, itemsize)
    try:
        if codec == NONE:
            raise ValueError(f"raw chunk of {mv.nbytes} bytes, expected {out.nbytes}")
        _blosc_into(mv, out, nthreads)
    except ValueError:
        raise
    except Exception as e:  # blosc2/lz4/zstd errors: one exception type for callers
        raise ValueError(f"corrupt chunk for codec {codec}: {e}") from e
