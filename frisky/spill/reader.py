"""Reading spilled values back: aligned reads, checksum verification, decompression.

The reader fills one page-aligned buffer with large ``preadv`` calls (O_DIRECT when the file
was opened so) and, while the next piece is being read, has the pool verify and decompress the
chunks that have fully arrived. Raw frames are returned as views of that buffer: no copy.
The buffer is fresh memory (the caller keeps it), whose first-touch page faults (the kernel
zeroes pages at ~2 GB/s here) a pool thread takes for the next piece while one is read.
Peers are served from a read-only mapping of the file instead (``map_value``).
"""

from __future__ import annotations

import concurrent.futures
import errno
import mmap
from collections.abc import Iterator
from typing import Any

from frisky.data.buffers import byte_view
from frisky.spill.checksum import checksum
from frisky.spill.directio import align_up, aligned_buffer, pread_into
from frisky.spill.errors import ChecksumError
from frisky.spill.index import Entry
from frisky.spill.writer import POOL_MIN, load_codecs
from frisky.telemetry import count

PAGE = 4096
READ_PIECE = 8 << 20  # bytes per preadv: the pool verifies piece N while N+1 is read


def _mismatch(key: Any, path: str, entry: Entry, frame: int, pos: int) -> ChecksumError:
    count("spill.checksum_errors")
    return ChecksumError(
        errno.EIO,
        f"checksum mismatch in spilled value {key!r}, frame {frame}, "
        f"at file offset {entry.offset + pos}: the spill file is corrupt",
        path,
    )


def _decode(data: memoryview, codec: int, csum: int, raw_len: int, itemsize: int, codecs: Any) -> Any:
    """Verify one stored chunk; return its decompressed bytes (None if raw, False if corrupt)."""
    if checksum(data) != csum:
        return False
    if not codec:
        return None
    return codecs.decompress(data, codec, raw_len, itemsize)


def _decode_into(out: Any, data: memoryview, codec: int, csum: int, raw_len: int, itemsize: int,
                 codecs: Any) -> bool:
    """Verify one stored chunk and decode it into ``out`` (a numpy byte array); False if corrupt."""
    import numpy as np

    if checksum(data) != csum:
        return False
    if codec & codecs.BLOSC:  # straight into place: no GIL, no temporary
        codecs.decompress_chunk(data, codec, memoryview(out), itemsize)
        return True
    res = data if not codec else byte_view(codecs.decompress(data, codec, raw_len, itemsize))
    # copyto releases the GIL, so the pool's threads assemble a frame in parallel.
    np.copyto(out, np.frombuffer(res, np.uint8))
    return True


def read_value(fd: int, entry: Entry, key: Any, path: str, align: int,
               pool: concurrent.futures.Executor) -> list:
    """Read, verify and decode all frames of ``entry``."""
    import numpy as np

    if entry.length == 0:
        return [b"" for _ in entry.frames]
    total = align_up(entry.length, align)
    buf = aligned_buffer(total, align)
    mv = memoryview(buf)
    codecs = load_codecs() if any(m.codec for m in entry.frames) else None
    # Raw frames are served as views of the read buffer; a frame with compressed chunks is
    # decoded into a fresh array, in place, in parallel.
    outs = [np.empty(m.nbytes, np.uint8) if any(c[1] for c in m.chunks) else None for m in entry.frames]
    jobs = [(fi, pos, n, codec, csum, raw, raw_len, meta.itemsize)
            for fi, meta in enumerate(entry.frames)
            for pos, n, codec, csum, raw, raw_len in meta.layout()]
    results: list = []
    j = 0
    done = 0
    faulted: Any = None
    while done < total:
        n = min(READ_PIECE, total - done)
        # Never let a touch land on pages the disk has filled; one still queued behind the
        # pool's other work is dropped (the read faults its pages in itself).
        if faulted is not None and not faulted.cancel():
            faulted.result()
        nxt = buf[done + n:done + n + READ_PIECE]
        # Fault the next piece's fresh pages in on another core while this one is read:
        # the kernel zeroes them at ~2 GB/s, which would otherwise add to every read.
        faulted = pool.submit(_touch, nxt) if nxt.nbytes else None
        pread_into(fd, mv[done:done + n], entry.offset + done)
        done += n
        # Verify what has arrived while the next piece is read (numpy and codecs release the GIL).
        while j < len(jobs) and jobs[j][1] + jobs[j][2] <= done:
            fi, pos, n_st, codec, csum, raw, raw_len, isz = jobs[j]
            data = mv[pos:pos + n_st]
            out = outs[fi]
            if out is None:
                args: tuple = (_decode, data, codec, csum, raw_len, isz, codecs)
            else:
                args = (_decode_into, out[raw:raw + raw_len], data, codec, csum, raw_len, isz, codecs)
            # Judged by the decoded size: a small stored chunk may expand to megabytes.
            results.append(pool.submit(*args) if max(n_st, raw_len) >= POOL_MIN else _Now(*args))
            j += 1
    decoded: dict[int, Any] = {}
    for (fi, pos, *_), r in zip(jobs, results):
        res = r.result()
        if res is False:
            raise _mismatch(key, path, entry, fi, pos)
        if res is not None and res is not True:
            decoded[fi] = res
    frames: list = []
    for fi, (meta, out) in enumerate(zip(entry.frames, outs)):
        if meta.nbytes == 0:
            frames.append(b"")
        elif out is not None:
            frames.append(memoryview(out))
        elif fi in decoded:
            frames.append(decoded[fi])
        else:  # stored raw: its chunks are contiguous in the read buffer
            frames.append(mv[meta.start:meta.start + meta.nbytes])
    return frames


def _touch(pages: Any) -> None:
    """Fault in the pages of ``pages`` (a numpy byte array) by writing one byte of each."""
    pages[::PAGE] = 0


class _Now:
    """Run ``fn(*args)`` at once; quacks like a Future (for chunks too small for the pool)."""

    __slots__ = ("value",)

    def __init__(self, fn: Any, *args: Any) -> None:
        self.value = fn(*args)

    def result(self) -> Any:
        return self.value


def iter_chunks(fd: int, entry: Entry, key: Any, path: str, align: int,
                chunk: int) -> Iterator[tuple[int, Any]]:
    """Yield ``(frame_index, bytes)`` pieces of at most ``chunk`` bytes, one stored chunk in memory."""
    codecs = load_codecs() if any(m.codec for m in entry.frames) else None
    for fi, meta in enumerate(entry.frames):
        for pos, n, codec, csum, _raw, raw_len in meta.layout():
            lo = pos - pos % align
            hi = align_up(pos + n, align)
            mv = memoryview(aligned_buffer(hi - lo, align))  # fresh: a consumer may keep pieces
            pread_into(fd, mv, entry.offset + lo)
            data = mv[pos - lo:pos - lo + n]
            out = _decode(data, codec, csum, raw_len, meta.itemsize, codecs)
            if out is False:
                raise _mismatch(key, path, entry, fi, pos)
            piece = data if out is None else byte_view(out)
            for s in range(0, raw_len, chunk):
                yield fi, piece[s:s + chunk]


def map_value(fd: int, entry: Entry, key: Any, path: str) -> tuple[list, Any]:
    """The frames of ``entry`` for sending on, and the file mapping their raw frames view.

    Raw frames are read-only views of a mapping of the spill file: their pages come from disk
    into the page cache as they are read (checksummed here a stored chunk at a time, then
    unmapped again; read once more as the socket sends them) and stay reclaimable by the kernel,
    so a value far larger than free memory can be served. Compressed frames are decoded into
    memory: they are small on disk and have to be decoded anyway.
    """
    import numpy as np

    if entry.length == 0:
        return [b"" for _ in entry.frames], None
    size = align_up(entry.length, PAGE)
    m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=entry.offset)
    m.madvise(mmap.MADV_SEQUENTIAL)
    mv = memoryview(m)
    codecs = load_codecs() if any(meta.codec for meta in entry.frames) else None
    frames: list = []
    for fi, meta in enumerate(entry.frames):
        if meta.nbytes == 0:
            frames.append(b"")
            continue
        compressed = any(c[1] for c in meta.chunks)
        out = np.empty(meta.nbytes, np.uint8) if compressed else None
        for pos, n, codec, csum, raw, raw_len in meta.layout():
            data = mv[pos:pos + n]
            if out is not None:
                ok = _decode_into(out[raw:raw + raw_len], data, codec, csum, raw_len, meta.itemsize, codecs)
            else:
                ok = checksum(data) == csum
                lo, hi = align_up(pos, PAGE), (pos + n) - (pos + n) % PAGE
                if hi > lo:  # verified: drop the pages from this process until they are sent
                    m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            data.release()
            if not ok:
                frames.clear()
                mv.release()
                raise _mismatch(key, path, entry, fi, pos)
        frames.append(memoryview(out) if out is not None else mv[meta.start:meta.start + meta.nbytes])
    mv.release()  # the frames hold views of their own
    return frames, m
