"""The write pipeline of a spill file.

A packer thread takes queued values, chooses a codec per frame by sampling, has a small pool
compress and checksum 4 MiB chunks in parallel, and copies the results back to back into
page-aligned staging blocks. One I/O thread writes those blocks in order with ``pwritev`` (it
is the only thread that ever writes the file), coalescing blocks already queued into one larger
write. Compression of block N+1 thus overlaps the write of block N: ``pwrite``, the numpy
checksum and copies, and the codecs all release the GIL.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import logging
import os
import queue
import threading
from typing import Any

from frisky.data.buffers import address, byte_view
from frisky.spill.checksum import checksum
from frisky.spill.directio import align_up, aligned_buffer, pwritev_all
from frisky.spill.errors import SpillError
from frisky.spill.index import Entry, FrameMeta
from frisky.telemetry import now

log = logging.getLogger("frisky.spill")

MIN_COMPRESS = 4096  # smaller frames cannot save a disk block: store them raw, skip sampling
POOL_MIN = 256 << 10  # smaller chunks are encoded inline: a pool round trip would cost more
MAX_COALESCE = 8  # blocks per pwritev
_NOTHING = object()


class Pending:
    """A value queued for writing; the caller keeps ``frames`` alive until ``on_done``."""

    __slots__ = ("key", "frames", "itemsizes", "nbytes", "on_done", "error", "cancelled",
                 "entry", "offset", "reserved", "t0")

    def __init__(self, key: Any, frames: list[memoryview], itemsizes: list[int], on_done: Any) -> None:
        self.key = key
        self.frames = frames
        self.itemsizes = itemsizes
        self.nbytes = sum(f.nbytes for f in frames)
        self.on_done = on_done
        self.error: BaseException | None = None
        self.cancelled = False
        self.entry: Entry | None = None
        self.offset = 0
        self.reserved = 0  # aligned bytes currently allocated to it in the file
        self.t0 = 0


class _Cancelled(Exception):
    pass


class _Ready:
    """A finished result that quacks like a Future (for chunks encoded inline)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def load_codecs() -> Any:
    """The codecs module (``frisky.data.compression``; blosc2 loads on its first use)."""
    from frisky.data import compression

    return compression


def encode(piece: memoryview, codec: int, itemsize: int, codecs: Any) -> tuple[memoryview, int, int]:
    """Compress ``piece`` with ``codec`` if that shrinks it; return (stored bytes, codec, checksum)."""
    if codec:
        out = byte_view(codecs.compress(piece, codec, itemsize))
        if out.nbytes < piece.nbytes:
            return out, codec, checksum(out)
    return piece, 0, checksum(piece)


class Writer:
    """The packer thread, the compression pool and the single I/O thread of one spill file."""

    def __init__(self, owner: Any, fd: int, direct: bool, align: int, block_size: int,
                 prefer: str | None, workers: int, staging: int = 4) -> None:
        self._owner = owner
        self._fd = fd
        self._direct = direct
        self._align = align
        self._block = block_size
        self._prefer = prefer  # the codec to try ("lz4"/"zstd"); None: every frame stored raw
        self._codecs: Any = _NOTHING
        self._values: queue.SimpleQueue = queue.SimpleQueue()
        self._io: queue.SimpleQueue = queue.SimpleQueue()
        self._free_bufs: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(staging):
            self._free_bufs.put(aligned_buffer(block_size, align))
        self._lookahead = workers + 1  # keep every pool thread busy while the packer copies
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="frisky-spill-pool")
        self.write_ns = 0
        self.bytes_written = 0
        self.bytes_zero_copy = 0  # written straight from the caller's (aligned) memory
        self.io_thread = threading.Thread(target=self._io_loop, name="frisky-spill-io", daemon=True)
        self._packer = threading.Thread(target=self._pack_loop, name="frisky-spill-pack", daemon=True)
        self.io_thread.start()
        self._packer.start()

    def submit(self, item: Pending) -> None:
        self._values.put(item)

    def stop(self, timeout: float | None = None) -> None:
        """Finish (or skip, if cancelled) what is queued, then end the threads."""
        self._values.put(None)
        self._packer.join(timeout)
        self.io_thread.join(timeout)
        self.pool.shutdown(wait=True)

    # --- packer thread ------------------------------------------------------------------

    def _pack_loop(self) -> None:
        while True:
            item = self._values.get()
            if item is None:
                self._io.put(None)
                return
            try:
                if not item.cancelled:
                    self._pack(item)
            except _Cancelled:  # the value was freed while queued: nothing to write or report
                pass
            except BaseException as e:  # a codec failed: report it, keep the thread alive
                log.exception("spill: encoding %r failed", item.key)
                err = SpillError(errno.EIO, f"encoding {item.key!r} for spilling failed: {e!r}")
                err.__cause__ = e
                item.error = err
            self._io.put(("d", item))

    def _choose(self, mv: memoryview, itemsize: int) -> int:
        if self._codecs is _NOTHING:
            self._codecs = load_codecs()
        if self._codecs is None or self._prefer is None or mv.nbytes < MIN_COMPRESS:
            return 0
        return int(self._codecs.choose(mv, itemsize, prefer=self._prefer))

    def _pack(self, item: Pending) -> None:
        import numpy as np

        item.t0 = now()
        block, align = self._block, self._align
        # Room for the data (stored raw at worst) and for padding before frames written in place.
        aligned = [f.nbytes >= POOL_MIN and address(f)[1] % align == 0 for f in item.frames]
        item.reserved = align_up(item.nbytes, align) + align * sum(aligned)
        item.offset = self._owner._alloc(item.reserved)
        metas: list[FrameMeta] = []
        window: collections.deque = collections.deque()
        stage: Any = None  # the staging block being filled, its fill level, its file offset
        pos = 0
        blk_off = item.offset
        stored = 0

        def emit(payload: memoryview) -> None:
            nonlocal stage, pos, blk_off
            src = np.frombuffer(payload, np.uint8)
            i, n_total = 0, payload.nbytes
            while i < n_total:
                if stage is None:
                    stage = self._free_bufs.get()  # waits for the I/O thread to return one
                n = min(block - pos, n_total - i)
                # numpy copies without the GIL (a memoryview slice assignment holds it), so the
                # I/O thread is not kept waiting for the GIL after each write returns.
                np.copyto(stage[pos:pos + n], src[i:i + n])
                pos += n
                i += n
                if pos == block:
                    self._io.put(("w", item, stage, blk_off, block, True))
                    stage, pos = None, 0
                    blk_off += block

        def emit_in_place(payload: memoryview) -> None:
            """Write the aligned bulk of ``payload`` straight from the caller's memory."""
            nonlocal blk_off
            bulk = payload.nbytes - payload.nbytes % align
            self._io.put(("w", item, payload[:bulk], blk_off, bulk, False))
            self.bytes_zero_copy += bulk
            blk_off += bulk
            emit(payload[bulk:])

        def drain() -> None:
            nonlocal stored, stage, pos, blk_off
            meta, fut, in_place = window.popleft()
            payload, codec, csum = fut.result()
            if in_place and not meta.chunks and pos % align:
                # Start the frame at an aligned offset so that its chunks can be written in
                # place; the padding before it costs less than one block.
                padded = align_up(pos, align)
                stage[pos:padded] = 0
                stored += padded - pos
                pos = padded
            if not meta.chunks:
                meta.start = stored
            meta.chunks.append((payload.nbytes, codec, csum))
            stored += payload.nbytes
            if in_place and not codec and pos % align == 0:
                if pos:  # hand over what precedes it in the staging block
                    self._io.put(("w", item, stage, blk_off, pos, True))
                    blk_off += pos
                    stage, pos = None, 0
                emit_in_place(payload)
            else:
                emit(payload)

        try:
            for mv, isz, in_memory_aligned in zip(item.frames, item.itemsizes, aligned):
                codec = self._choose(mv, isz)
                chunk = block - block % isz if codec and 1 < isz <= block else block
                meta = FrameMeta(mv.nbytes, isz, codec, chunk)
                metas.append(meta)
                for s in range(0, mv.nbytes, chunk):
                    if item.cancelled or item.error is not None:  # deleted, or a write failed
                        raise _Cancelled
                    piece = mv[s:s + chunk]
                    if piece.nbytes >= POOL_MIN:
                        fut: Any = self.pool.submit(encode, piece, codec, isz, self._codecs)
                    else:
                        fut = _Ready(encode(piece, codec, isz, self._codecs))
                    # Page-aligned memory (shared-memory segments, mmaps) needs no staging copy.
                    in_place = in_memory_aligned and not codec and piece.nbytes >= POOL_MIN
                    window.append((meta, fut, in_place))
                    if len(window) > self._lookahead:
                        drain()
            while window:
                drain()
            if stage is not None:  # the value's last, partial block: pad it to the alignment
                padded = align_up(pos, align)
                stage[pos:padded] = 0
                self._io.put(("w", item, stage, blk_off, padded, True))
                stage = None
        finally:
            if stage is not None:  # failed mid-block: hand the buffer back
                self._free_bufs.put(stage)
        used = align_up(stored, align)
        if used < item.reserved:  # compression saved space: give the unused tail back now
            self._owner._free(item.offset + used, item.reserved - used)
            item.reserved = used
        item.entry = Entry(item.offset, stored, used, metas, item.nbytes)

    # --- I/O thread ---------------------------------------------------------------------

    def _io_loop(self) -> None:
        carry: Any = _NOTHING
        while True:
            msg = self._io.get() if carry is _NOTHING else carry
            carry = _NOTHING
            if msg is None:
                return
            if msg[0] == "d":
                try:
                    self._owner._complete(msg[1])
                except BaseException:
                    log.exception("spill: completing %r failed", msg[1].key)
                continue
            _, item, buf, off, n, staged = msg
            bufs = [(buf, n, staged)]
            end = off + n
            # Blocks of the same value queued behind this one go out in the same syscall:
            # larger writes stream faster, and this costs nothing when the packer is behind.
            while len(bufs) < MAX_COALESCE:
                try:
                    nxt = self._io.get_nowait()
                except queue.Empty:
                    break
                if nxt is not None and nxt[0] == "w" and nxt[1] is item and nxt[3] == end:
                    bufs.append((nxt[2], nxt[4], nxt[5]))
                    end += nxt[4]
                else:
                    carry = nxt
                    break
            if item.error is None and not item.cancelled:
                views = [memoryview(b[:k]) for b, k, _ in bufs]
                t0 = now()
                try:
                    pwritev_all(self._fd, views, off, self._direct)
                    self.bytes_written += end - off
                except OSError as e:
                    item.error = self._owner._write_error(item, e)
                finally:
                    self.write_ns += now() - t0
                    for v in views:
                        v.release()
            for b, _, staged in bufs:
                if staged:  # not the caller's memory (written in place)
                    self._free_bufs.put(b)


def default_workers() -> int:
    """Compression threads: two where there are two cores, the packer and I/O thread aside."""
    return max(1, min(2, os.cpu_count() or 1))
