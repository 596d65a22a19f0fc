"""What is where in the spill file: per-value entries and the free-extent allocator."""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class FrameMeta:
    """One frame of a value: where its stored chunks start and how they are encoded.

    A frame is stored as consecutive chunks of ``chunk`` original bytes (the last one shorter),
    each compressed on its own so the pool can encode them in parallel and a reader can stream
    and verify them one at a time. ``chunks`` holds ``(stored_len, codec, checksum)`` per chunk;
    ``codec`` is the one chosen for the frame (a chunk that did not shrink is stored raw, 0).
    """

    __slots__ = ("nbytes", "itemsize", "codec", "chunk", "start", "chunks")

    def __init__(self, nbytes: int, itemsize: int, codec: int, chunk: int) -> None:
        self.nbytes = nbytes
        self.itemsize = itemsize
        self.codec = codec
        self.chunk = chunk
        self.start = 0  # offset of the first chunk from the start of the value's extent
        self.chunks: list[tuple[int, int, int]] = []

    def layout(self) -> Iterator[tuple[int, int, int, int, int, int]]:
        """Yield ``(stored_offset, stored_len, codec, csum, raw_offset, raw_len)`` per chunk."""
        pos = self.start
        raw = 0
        for stored, codec, csum in self.chunks:
            raw_len = min(self.chunk, self.nbytes - raw)
            yield pos, stored, codec, csum, raw, raw_len
            pos += stored
            raw += raw_len


class Entry:
    """A value that is completely written: its extent in the file and its frames."""

    __slots__ = ("offset", "length", "extent", "frames", "nbytes", "readers", "deleted")

    def __init__(self, offset: int, length: int, extent: int, frames: list[FrameMeta], nbytes: int) -> None:
        self.offset = offset
        self.length = length  # stored bytes (payload and padding between frames, none after)
        self.extent = extent  # aligned bytes reserved for it in the file
        self.frames = frames
        self.nbytes = nbytes  # original (logical) size
        self.readers = 0  # gets in progress: the extent is freed only when the last one ends
        self.deleted = False


class Extents:
    """First-fit allocator of aligned extents in one file, coalescing freed neighbours.

    ``end`` is the logical file size; when freeing makes the tail free, ``end`` shrinks and
    ``free`` reports it so the caller can truncate the file.
    """

    def __init__(self) -> None:
        self.starts: list[int] = []  # sorted offsets of free holes
        self.sizes: list[int] = []
        self.end = 0

    @property
    def free_bytes(self) -> int:
        """Bytes in holes inside the file."""
        return sum(self.sizes)

    def alloc(self, size: int) -> int:
        """Reserve ``size`` (aligned) bytes; return their offset."""
        if size <= 0:  # empty values take no space
            return 0
        for i, hole in enumerate(self.sizes):
            if hole >= size:
                off = self.starts[i]
                if hole == size:
                    del self.starts[i], self.sizes[i]
                else:
                    self.starts[i] += size
                    self.sizes[i] -= size
                return off
        off = self.end
        self.end += size
        return off

    def free(self, offset: int, size: int) -> bool:
        """Return ``size`` bytes at ``offset`` to the free list; True if the file shrank."""
        if size <= 0:
            return False
        i = bisect.bisect_left(self.starts, offset)
        if i < len(self.starts) and self.starts[i] < offset + size:
            raise RuntimeError(f"double free of spill extent at {offset}")
        if i and self.starts[i - 1] + self.sizes[i - 1] > offset:
            raise RuntimeError(f"double free of spill extent at {offset}")
        if i < len(self.starts) and self.starts[i] == offset + size:  # merge with the next hole
            size += self.sizes[i]
            del self.starts[i], self.sizes[i]
        if i and self.starts[i - 1] + self.sizes[i - 1] == offset:  # merge with the previous one
            i -= 1
            offset = self.starts[i]
            size += self.sizes[i]
            del self.starts[i], self.sizes[i]
        if offset + size == self.end:
            self.end = offset
            return True
        self.starts.insert(i, offset)
        self.sizes.insert(i, size)
        return False
