"""Reading spilled values back: aligned reads, checksum verification, decompression.

The reader fills one page-aligned buffer with large ``preadv`` calls (O_DIRECT when the file
was opened so) and, while the next piece is being read, has the pool verify and decompress the
chunks that have fully arrived. Raw frames are returned as views of that buffer: no copy.
"""

from __future__ import annotations

import concurrent.futures
import errno
import zlib
from collections.abc import Iterator
from typing import Any

from frisky.spill.directio import align_up, aligned_buffer, pread_into
from frisky.spill.errors import ChecksumError
from frisky.spill.index import Entry, FrameMeta
from frisky.spill.writer import POOL_MIN, flat, load_codecs

READ_PIECE = 16 << 20  # bytes per preadv: larger reads stream faster than dd's 4 MiB


def _mismatch(key: Any, path: str, entry: Entry, frame: int, pos: int) -> ChecksumError:
    return ChecksumError(
        errno.EIO,
        f"checksum mismatch in spilled value {key!r}, frame {frame}, "
        f"at file offset {entry.offset + pos}: the spill file is corrupt",
        path,
    )


def _decode(data: memoryview, codec: int, crc: int, raw_len: int, itemsize: int, codecs: Any) -> Any:
    """Verify one stored chunk; return its decompressed bytes (None for raw chunks)."""
    if zlib.crc32(data) != crc:
        return False
    if not codec:
        return None
    return codecs.decompress(data, codec, raw_len, itemsize)


def read_value(fd: int, entry: Entry, key: Any, path: str, align: int,
               pool: concurrent.futures.Executor) -> list:
    """Read, verify and decode all frames of ``entry``."""
    if entry.length == 0:
        return [b"" for _ in entry.frames]
    total = align_up(entry.length, align)
    mv = memoryview(aligned_buffer(total, align))
    codecs = load_codecs() if any(m.codec for m in entry.frames) else None
    jobs = [(fi, meta, pos, n, codec, crc, raw, raw_len)
            for fi, meta in enumerate(entry.frames)
            for pos, n, codec, crc, raw, raw_len in meta.layout()]
    results: list = []
    j = 0
    done = 0
    while done < total:
        n = min(READ_PIECE, total - done)
        pread_into(fd, mv[done:done + n], entry.offset + done)
        done += n
        # Verify what has arrived while the next piece is read (crc32 releases the GIL).
        while j < len(jobs) and jobs[j][2] + jobs[j][3] <= done:
            fi, meta, pos, n_st, codec, crc, raw, raw_len = jobs[j]
            args = (mv[pos:pos + n_st], codec, crc, raw_len, meta.itemsize, codecs)
            if n_st >= POOL_MIN:
                results.append(pool.submit(_decode, *args))
            else:
                results.append(_decode(*args))
            j += 1
    outs = [r.result() if isinstance(r, concurrent.futures.Future) else r for r in results]
    frames: list = []
    k = 0
    for fi, meta in enumerate(entry.frames):
        n_chunks = len(meta.chunks)
        mine = outs[k:k + n_chunks]
        for c, out in enumerate(mine):
            if out is False:
                raise _mismatch(key, path, entry, fi, jobs[k + c][2])
        k += n_chunks
        frames.append(_assemble(meta, mine, mv))
    return frames


def _assemble(meta: FrameMeta, outs: list, mv: memoryview) -> Any:
    if meta.nbytes == 0:
        return b""
    if all(o is None for o in outs):  # stored raw: the chunks are contiguous in the buffer
        return mv[meta.start:meta.start + meta.nbytes]
    if len(outs) == 1:
        return outs[0]
    out = bytearray(meta.nbytes)
    for (pos, n, _codec, _crc, raw, raw_len), o in zip(meta.layout(), outs):
        out[raw:raw + raw_len] = mv[pos:pos + n] if o is None else o
    return out


def iter_chunks(fd: int, entry: Entry, key: Any, path: str, align: int,
                chunk: int) -> Iterator[tuple[int, Any]]:
    """Yield ``(frame_index, bytes)`` pieces of at most ``chunk`` bytes, one stored chunk in memory."""
    codecs = load_codecs() if any(m.codec for m in entry.frames) else None
    for fi, meta in enumerate(entry.frames):
        for pos, n, codec, crc, _raw, raw_len in meta.layout():
            lo = pos - pos % align
            hi = align_up(pos + n, align)
            mv = memoryview(aligned_buffer(hi - lo, align))  # fresh: a consumer may keep pieces
            pread_into(fd, mv, entry.offset + lo)
            data = mv[pos - lo:pos - lo + n]
            out = _decode(data, codec, crc, raw_len, meta.itemsize, codecs)
            if out is False:
                raise _mismatch(key, path, entry, fi, pos)
            piece = data if out is None else flat(out)
            for s in range(0, raw_len, chunk):
                yield fi, piece[s:s + chunk]
