"""Large receive buffers kept warm for reuse once the values built on them are gone.

A fresh 256 MiB buffer costs more to fault in, page by page, than decompressing a
chunked transfer into it (measured here: ~70-100 ms of first touch against ~55 ms of
blosc2 decoding). A worker that keeps receiving large values of like sizes — the usual
case with chunked arrays — gets each next buffer from this pool, already mapped.

Each buffer is an anonymous mapping the pool owns. It hands out a NumPy view of it and
takes the mapping back when that view dies, i.e. when the last value or view built on
it is gone. Idle mappings are bounded by ``limit`` bytes and dropped on :meth:`clear`
(the memory manager calls it before spilling), so the pool never costs spilled data.
"""

from __future__ import annotations

import mmap
import threading
import weakref

from frisky.telemetry import count

MIN_SIZE = 4 << 20  # below this, first touch costs under a millisecond: not worth idle memory
_ROUND = 2 << 20  # whole huge pages
_SLACK = 1.25  # reuse a mapping at most this much larger than asked for


class BufferPool:
    """Hands out writable buffers of at least ``MIN_SIZE`` bytes, reusing released ones."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, int(limit))
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()
        self.idle_bytes = 0
        self.reused = 0  # buffers served from the pool, for telemetry and tests

    def take(self, nbytes: int) -> memoryview:
        """A writable buffer of exactly ``nbytes`` (contents undefined)."""
        import numpy as np

        if nbytes < MIN_SIZE or not self.limit:
            return memoryview(np.empty(nbytes, np.uint8))
        mm = self._pop(nbytes)
        if mm is None:
            # private: a shared anonymous mapping is shmem, which gets no huge pages
            mm = mmap.mmap(-1, -(-nbytes // _ROUND) * _ROUND, flags=mmap.MAP_PRIVATE)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                mm.madvise(mmap.MADV_HUGEPAGE)
        else:
            self.reused += 1
            count("bufpool.reused")
        view = np.frombuffer(mm, np.uint8, count=nbytes)
        # the view dies only after everything built on it (arrays, memoryviews) has died
        weakref.finalize(view, self._give_back, mm).atexit = False
        return memoryview(view)

    def _pop(self, nbytes: int) -> mmap.mmap | None:
        with self._lock:
            best = None
            for mm in self._idle:
                if nbytes <= len(mm) <= nbytes * _SLACK and (best is None or len(mm) < len(best)):
                    best = mm
            if best is not None:
                self._idle.remove(best)
                self.idle_bytes -= len(best)
            return best

    def _give_back(self, mm: mmap.mmap) -> None:
        # Runs as the view dies, before it lets go of the mapping; a mapping not kept is
        # unmapped when that last reference goes.
        with self._lock:
            if self.idle_bytes + len(mm) <= self.limit:
                self._idle.append(mm)
                self.idle_bytes += len(mm)

    def clear(self) -> int:
        """Unmap every idle buffer; returns the bytes given back to the OS."""
        with self._lock:
            idle, self._idle, freed, self.idle_bytes = self._idle, [], self.idle_bytes, 0
        del idle  # the last references: unmapped here
        return freed


pool = BufferPool(0)  # this process's pool; a worker sizes it from its memory limit
