"""SpillFile: one worker's spill file, written by a pipelined single writer."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from frisky.data.buffers import byte_view
from frisky.data.compression import preference
from frisky.spill import reader
from frisky.spill.directio import alignment, open_data_file
from frisky.spill.errors import SpillError
from frisky.spill.index import Entry, Extents
from frisky.spill.sweep import dir_prefix, spill_root
from frisky.spill.writer import Pending, Writer, default_workers
from frisky.telemetry import count, now, span

log = logging.getLogger("frisky.spill")

OnDone = Callable[[Hashable, "BaseException | None"], Any]


def _prefix(key: Hashable) -> str:
    """The telemetry key prefix: ``"inc"`` for ``"inc-ab12"`` or ``("inc-ab12", 3)``."""
    if isinstance(key, tuple) and key:
        key = key[0]
    return key.rsplit("-", 1)[0] if isinstance(key, str) else type(key).__name__


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class SpillFile:
    """Values (lists of buffers) spilled to one file in a private directory.

    ``put`` returns at once; a packer thread compresses and stages the value and a single I/O
    thread writes it with O_DIRECT where the filesystem allows. ``on_done(key, error)`` runs on
    the I/O thread once the value is complete in the file (``error`` None) or has failed; the
    caller should drop its in-memory copy only then. Do not call ``put`` with backpressure,
    ``flush`` or ``close`` from ``on_done``: they wait for the thread that runs it.
    """

    def __init__(self, directory: str | None = None, *, name: str = "worker", direct: bool | None = None,
                 block_size: int = 4 << 20, max_pending_bytes: int = 256 << 20,
                 compression: str | None = None, workers: int | None = None) -> None:
        # lz4 unless told otherwise: zstd compresses ~20% slower for a ratio that only pays off
        # on a disk slower than the codecs (blosc2 lz4 on shuffled arange: 4.9 GB/s a core,
        # zstd 4.0; an O_DIRECT disk here writes 1.6 GB/s). A bad setting fails here, first.
        prefer = preference(compression, "lz4")
        root = spill_root(directory)
        try:
            self.directory = tempfile.mkdtemp(prefix=dir_prefix(name), dir=root)  # mode 0700
        except OSError as e:
            raise SpillError(e.errno, f"cannot create a spill directory in {root!r}: {e.strerror}", root) from e
        self._finalizer = weakref.finalize(self, _remove_tree, self.directory)
        self.path = os.path.join(self.directory, "data")
        self.align = alignment(self.directory)
        self.block_size = max(self.align, block_size - block_size % self.align)
        try:
            self._fd, self.direct = open_data_file(self.path, direct, self.align)
        except OSError as e:
            self._finalizer()
            what = "open with O_DIRECT" if direct else "create"
            raise SpillError(e.errno, f"cannot {what} spill file {self.path!r}: {e.strerror}", self.path) from e
        self.max_pending_bytes = max_pending_bytes
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._index: dict[Hashable, Entry] = {}
        self._pending: dict[Hashable, Pending] = {}
        self._extents = Extents()
        self._inflight = 0  # values queued and not yet completed (including cancelled ones)
        self._pending_bytes = 0
        self._closed = False
        self._bytes_logical = 0
        self._bytes_read = 0
        self._bytes_mapped = 0  # served to peers from a mapping of the file
        self._read_ns = 0
        self._writer = Writer(self, self._fd, self.direct, self.align, self.block_size, prefer,
                              workers or default_workers())

    # --- writing ------------------------------------------------------------------------

    def put(self, key: Hashable, frames: list, itemsizes: list[int] | None = None,
            on_done: OnDone | None = None) -> None:
        """Queue ``frames`` (buffers) for writing under ``key``, replacing any older value.

        Returns at once unless more than ``max_pending_bytes`` are already queued.
        ``itemsizes`` (default: each buffer's own) guide byte-shuffling before compression.
        """
        views = [byte_view(f) for f in frames]
        if itemsizes is None:
            itemsizes = [getattr(f, "itemsize", 1) for f in frames]
        elif len(itemsizes) != len(views):
            raise ValueError(f"{len(itemsizes)} itemsizes for {len(views)} frames")
        item = Pending(key, views, [max(1, int(s)) for s in itemsizes], on_done)
        with self._cond:
            # Backpressure, except on the I/O thread itself (an on_done that spills more).
            if threading.current_thread() is not self._writer.io_thread:
                self._cond.wait_for(lambda: self._closed or not self._pending_bytes
                                    or self._pending_bytes + item.nbytes <= self.max_pending_bytes)
            if self._closed:
                raise SpillError(errno.EBADF, f"spill file {self.path!r} is closed")
            self._discard(key)
            self._pending[key] = item
            self._inflight += 1
            self._pending_bytes += item.nbytes
            self._writer.submit(item)  # under the lock: close() cannot slip in before it

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is written (or failed); TimeoutError if not in time."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._inflight == 0, timeout):
                raise TimeoutError(f"spill flush: {self._inflight} values still being written")

    # --- reading ------------------------------------------------------------------------

    def get(self, key: Hashable) -> list:
        """The frames of ``key`` (bytes-like), verified; a value still queued is served from memory."""
        t0 = now()
        entry = self._acquire(key)
        if isinstance(entry, list):
            return entry
        try:
            frames = reader.read_value(self._fd, entry, key, self.path, self.align, self._writer.pool)
        finally:
            self._release(entry)
        read = -(-entry.length // self.align) * self.align
        with self._lock:
            self._bytes_read += read
            self._read_ns += now() - t0
        span("spill.read", t0, prefix=_prefix(key), nbytes=read)
        count("spill.bytes_read", read)
        return frames

    def iter_frame_chunks(self, key: Hashable, chunk: int = 4 << 20) -> Iterator[tuple[int, Any]]:
        """Yield ``(frame_index, bytes_like)`` pieces of ``key`` in order, streamed from disk.

        At most one stored chunk (``block_size`` of original data) is in memory at a time, so a
        value can be served to a peer without loading it whole. Empty frames yield nothing; a
        missing key raises KeyError on the first iteration.
        """
        if chunk <= 0:
            raise ValueError("chunk must be positive")
        entry = self._acquire(key)
        if isinstance(entry, list):
            for fi, f in enumerate(entry):
                for s in range(0, f.nbytes, chunk):
                    yield fi, f[s:s + chunk]
            return
        t0 = now()
        try:
            yield from reader.iter_chunks(self._fd, entry, key, self.path, self.align, chunk)
        finally:
            self._release(entry)
            with self._lock:
                self._bytes_read += entry.extent
            span("spill.read", t0, prefix=_prefix(key))
            count("spill.bytes_read", entry.extent)

    def map_frames(self, key: Hashable) -> list:
        """The frames of ``key`` for sending, verified, without reading raw frames into memory.

        Raw frames are read-only views of a mapping of the file (see ``reader.map_value``); the
        value's space is not reused until the last of them is gone. A value still queued is
        served from memory.
        """
        t0 = now()
        entry = self._acquire(key)
        if isinstance(entry, list):
            return entry
        try:
            frames, mapping = reader.map_value(self._fd, entry, key, self.path)
        except BaseException:
            self._release(entry)
            raise
        if mapping is None:
            self._release(entry)
        else:  # released once nothing views the mapping any more (the socket has sent it)
            weakref.finalize(mapping, self._release, entry)
        with self._lock:
            self._bytes_mapped += entry.length
            self._read_ns += now() - t0
        span("spill.read", t0, prefix=_prefix(key))
        count("spill.bytes_mapped", entry.length)
        return frames

    def _acquire(self, key: Hashable) -> Entry | list:
        with self._lock:
            if self._closed:
                raise SpillError(errno.EBADF, f"spill file {self.path!r} is closed")
            item = self._pending.get(key)
            if item is not None:
                return list(item.frames)
            entry = self._index.get(key)
            if entry is None:
                raise KeyError(key)
            entry.readers += 1
            return entry

    def _release(self, entry: Entry) -> None:
        with self._lock:
            entry.readers -= 1
            if entry.deleted and not entry.readers and not self._closed:
                self._free_locked(entry.offset, entry.extent)

    # --- the mapping --------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._index or key in self._pending

    def __len__(self) -> int:
        with self._lock:
            return len(self._index) + len(self._pending)

    def keys(self) -> list:
        """Keys written or being written."""
        with self._lock:
            return list(self._index) + list(self._pending)

    def nbytes(self, key: Hashable) -> int:
        """The original (uncompressed) size of ``key``."""
        with self._lock:
            item = self._pending.get(key)
            if item is not None:
                return item.nbytes
            return self._index[key].nbytes

    def delete(self, key: Hashable) -> None:
        """Forget ``key`` and reuse its space; a value still being written is abandoned."""
        with self._lock:
            if not self._discard(key):
                raise KeyError(key)

    def _discard(self, key: Hashable) -> bool:
        item = self._pending.pop(key, None)
        if item is not None:
            item.cancelled = True  # the I/O thread frees its space when it gets to it
            return True
        entry = self._index.pop(key, None)
        if entry is None:
            return False
        entry.deleted = True
        if not entry.readers:
            self._free_locked(entry.offset, entry.extent)
        return True

    # --- space --------------------------------------------------------------------------

    def _alloc(self, size: int) -> int:
        with self._lock:
            return self._extents.alloc(size)

    def _free(self, offset: int, size: int) -> None:
        with self._lock:
            self._free_locked(offset, size)

    def _free_locked(self, offset: int, size: int) -> None:
        if self._extents.free(offset, size):  # the tail is free: give it back to the fs
            try:
                os.ftruncate(self._fd, self._extents.end)
            except OSError:
                log.warning("spill: truncating %s failed", self.path, exc_info=True)

    # --- completion (I/O thread) --------------------------------------------------------

    def _write_error(self, item: Pending, e: OSError) -> SpillError:
        if e.errno == errno.ENOSPC:
            why = "no space left on device"
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            why = "not permitted"
        else:
            why = e.strerror or str(e)
        err = SpillError(e.errno, f"spilling {item.key!r} ({item.nbytes} bytes) to {self.path!r} failed: {why}",
                         self.path)
        err.__cause__ = e
        return err

    def _complete(self, item: Pending) -> None:
        key = item.key
        with self._cond:
            err = item.error
            if err is None and item.cancelled:
                err = SpillError(errno.ECANCELED, f"{key!r} was deleted or the spill file closed before it was written")
            if self._pending.get(key) is item:
                del self._pending[key]
            if err is None:
                self._index[key] = item.entry
                self._bytes_logical += item.nbytes
            else:
                self._free_locked(item.offset, item.reserved)
            self._inflight -= 1
            self._pending_bytes -= item.nbytes
            self._cond.notify_all()
        if err is None:
            span("spill.write", item.t0, prefix=_prefix(key), nbytes=item.reserved)
            count("spill.bytes_written", item.reserved)
        item.frames = []  # the caller owns the memory; do not keep it alive
        if item.on_done is not None:
            try:
                item.on_done(key, err)
            except Exception:
                log.exception("spill: on_done callback for %r raised", key)

    # --- lifetime -----------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """Byte and time totals, the I/O mode, the file size, free space in it and on the disk."""
        try:
            vfs = os.statvfs(self.directory)
            disk_free = vfs.f_bavail * vfs.f_frsize
        except OSError:
            disk_free = 0
        with self._lock:
            return {
                "bytes_written": self._writer.bytes_written,
                "bytes_zero_copy": self._writer.bytes_zero_copy,
                "bytes_logical": self._bytes_logical,
                "bytes_read": self._bytes_read,
                "bytes_mapped": self._bytes_mapped,
                "write_seconds": self._writer.write_ns / 1e9,
                "read_seconds": self._read_ns / 1e9,
                "direct": self.direct,
                "file_size": self._extents.end,
                "free_bytes": self._extents.free_bytes,
                "disk_free_bytes": disk_free,
                "values": len(self._index),
                "pending": self._inflight,
            }

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Abandon queued values (their on_done gets an error), stop the threads, remove the files."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for item in self._pending.values():
                item.cancelled = True
            self._cond.notify_all()
        self._writer.stop(timeout=30)
        with self._lock:
            self._pending.clear()
            self._index.clear()
        os.close(self._fd)
        self._finalizer()

    def __enter__(self) -> SpillFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "direct" if self.direct else "buffered"
        return f"<SpillFile {self.path!r} {mode}, {len(self)} values>"
