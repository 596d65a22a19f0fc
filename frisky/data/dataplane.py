"""How a large value travels: shared memory on one host, compressed frames across hosts.

A large value is serialized once (pickle protocol 5): a small stream plus raw buffers.
When it is produced, every buffer of at least ``shm_threshold`` bytes is copied once
into a block of the worker's shared-memory arena (:mod:`frisky.shm.arena`: mapped once,
its pages reused from value to value) and the value is rebuilt as views of those blocks,
so the heap copy is freed. A consumer on the same host (``ipc://``/``inproc://`` peers)
receives only block descriptors and views them read-only in its own, long-lived mapping
of the arena: a NumPy array arrives as a view, with no copy and no new mapping. Without
an arena (clients scattering) a buffer goes to a segment of its own; when the arena is
full it stays on the heap and is sent as bytes. A consumer across TCP receives the bytes, each buffer compressed by a
codec chosen by sampling it (none when it does not pay).

On the wire a value is a list of descriptors, one per frame, and the frames that follow:
  [RAW]                             the next frame, as is
  [SHM, name, nbytes]               a segment to map (no frame follows)
  [ARENA, name, offset, nbytes, gen] a block of a host arena (no frame follows)
  [PACKED, codec, nbytes, itemsize] the next frame, compressed
  [STREAMED, codec, nbytes, itemsize] no frame here: the buffer follows the reply as
                                    messages of one chunk each (worker to worker over TCP,
                                    see :func:`chunks` and :class:`Incoming`); codec NONE
                                    streams incompressible bytes as they are
"""

from __future__ import annotations

import pickle
from typing import Any

from frisky import config, shm
from frisky.data import bufpool, compression
from frisky.data.buffers import byte_view
from frisky.shm import arena as _arena
from frisky.telemetry import now, recorder

RAW, SHM, PACKED, STREAMED, ARENA = 0, 1, 2, 3, 4
_NUMPY_COPY = 64 * 1024  # above this numpy copies (it releases the GIL; memoryview does not)
# below this a buffer travels in one frame: streaming only pays once it overlaps real work
STREAM_MIN = 2 * compression.STREAM_CHUNK
# one codec thread at each end: the sender's and the receiver's already keep two cores busy
STREAM_THREADS = 1


class Frames(list):
    """``[stream, *buffers]`` of one value, with each buffer's item size (for byteshuffle)."""

    itemsizes: list[int]


def dumps(obj: Any) -> Frames:
    """Serialize with out-of-band buffers (no copy of NumPy/bytes data)."""
    import cloudpickle

    buffers: list[pickle.PickleBuffer] = []
    stream = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    frames = Frames([stream])
    frames.itemsizes = [1]
    for b in buffers:
        try:
            raw = b.raw()
            itemsize = memoryview(b).itemsize
        except BufferError:  # not contiguous: let pickle copy it in band
            return _inband(obj)
        frames.append(raw)
        frames.itemsizes.append(itemsize)
    return frames


def _inband(obj: Any) -> Frames:
    import cloudpickle

    frames = Frames([cloudpickle.dumps(obj, protocol=5)])
    frames.itemsizes = [1]
    return frames


def loads(frames: list) -> Any:
    """Rebuild a value from ``[stream, *buffers]`` (buffers may be segment views)."""
    return pickle.loads(frames[0], buffers=frames[1:])


def nbytes(frames: list) -> int:
    total = 0
    for f in frames:
        total += f.size if isinstance(f, (shm.Segment, _arena.Block)) else memoryview(f).nbytes
    return total


def is_shared(frames: list) -> bool:
    """Whether any of ``frames`` lives in shared memory (a segment or an arena block)."""
    return any(isinstance(f, (shm.Segment, _arena.Block)) for f in frames)


def _copy_into(dst: memoryview, src) -> None:
    src = byte_view(src)
    if src.nbytes >= _NUMPY_COPY:
        import numpy as np

        np.copyto(np.frombuffer(dst, np.uint8), np.frombuffer(src, np.uint8))
    else:
        dst[:] = src


def share(frames: Frames, cluster_id: str, registry: shm.Registry, threshold: int | None = None,
          arena: _arena.Arena | None = None) -> Frames:
    """Move buffers of at least ``threshold`` bytes into shared memory: blocks of ``arena``
    when given (a full arena leaves the buffer on the heap), else new segments (owned by
    ``registry``)."""
    threshold = config.get("shm_threshold", threshold)
    out = Frames([frames[0]])
    out.itemsizes = frames.itemsizes
    for f in frames[1:]:
        n = memoryview(f).nbytes
        if n >= threshold:
            if arena is not None:
                block = arena.alloc(n)
                if block is None:  # full: keep it on the heap, send it as bytes
                    out.append(f)
                    continue
                t0 = now()
                _copy_into(block.buf, f)
                recorder.span("shm.arena.write", t0)
                out.append(block)
                continue
            try:
                seg = shm.write(cluster_id, f)
            except OSError:  # /dev/shm full: keep it on the heap, send it as bytes
                out.append(f)
                continue
            registry.add(seg)
            out.append(seg)
        else:
            out.append(f)
    return out


def views(frames: list) -> list:
    """The frames as buffers ``loads`` accepts (segments become their memoryviews)."""
    return [f.buf if isinstance(f, (shm.Segment, _arena.Block)) else f for f in frames]


def release(frames: list, registry: shm.Registry) -> None:
    """The producer drops its value: unlink its segments (mappings elsewhere stay valid).

    Arena blocks need nothing here: a block returns to its arena once the last view of it
    here is gone and no reader elsewhere pins it."""
    for f in frames:
        if isinstance(f, shm.Segment):
            registry.decref(f.name)


def encode(frames: list, same_host: bool, prefer: str | None, streams: list | None = None) -> tuple[list, list]:
    """Descriptors and frames to send ``frames`` to a peer.

    ``prefer`` is the codec to try (``"lz4"``/``"zstd"``, from
    :func:`frisky.data.compression.preference`), or None to send buffers uncompressed.

    With a ``streams`` list, large compressible buffers are not compressed here: each is
    described as STREAMED and appended to ``streams`` as ``(buffer, codec, itemsize)``, for
    the caller to send after the reply with :func:`chunks`.
    """
    descs: list = []
    out: list = []
    itemsizes = getattr(frames, "itemsizes", None)
    for i, f in enumerate(frames):
        if isinstance(f, _arena.Block):
            if same_host:
                descs.append([ARENA, *f.descriptor()])
                continue
            f = f.buf
        elif isinstance(f, shm.Segment):
            if same_host:
                descs.append([SHM, f.name, f.size])
                continue
            f = f.buf
        n = memoryview(f).nbytes
        if prefer and i > 0 and n >= 1024:
            itemsize = itemsizes[i] if itemsizes else 1
            if streams is not None and n >= STREAM_MIN:
                # incompressible buffers stream too (codec NONE, chunks sent without a copy):
                # one big frame would land in memory ZeroMQ allocates fresh, whose first
                # touch costs more than the copy out of small chunks into a warm buffer
                codec = _choose_stream(f, itemsize, prefer)
                descs.append([STREAMED, codec, n, itemsize])
                streams.append((f, codec, itemsize))
                continue
            codec, payload = compression.encode(f, itemsize=itemsize, prefer=prefer)
            if codec != compression.NONE:
                descs.append([PACKED, codec, memoryview(f).nbytes, itemsize])
                out.append(payload)
                continue
        descs.append([RAW])
        out.append(f)
    return descs, out


def _choose_stream(buf: Any, itemsize: int, prefer: str) -> int:
    t0 = now()
    codec = compression.choose(buf, itemsize=itemsize, prefer=prefer)
    # Data so compressible that shuffling gains nothing (constants: np.ones, zeros) still
    # goes through blosc2: it finds runs of one value per block and writes each chunk
    # straight into place, where plain lz4 decodes into a fresh buffer and copies it
    # (measured: np.ones, 4 MiB chunks, blosc2 ~6x faster to decode, ~2x to encode).
    if codec in (compression.LZ4, compression.ZSTD) and itemsize <= 255 and compression._available():
        codec |= compression.SHUFFLE | compression.BLOSC
    recorder.span("tcp.send.choose", t0)
    return codec


def chunks(streams: list):
    """The messages (one payload each) that carry ``streams`` after their reply, compressed
    one chunk at a time so each can be on the wire while the next is compressed."""
    add = recorder.add
    for buf, codec, itemsize in streams:
        mv = byte_view(buf)
        step = compression.stream_chunk(itemsize, mv.nbytes, codec)
        count, total = 0, 0
        for off in range(0, mv.nbytes, step):
            t0 = now()
            payload = compression.compress_chunk(mv[off:off + step], codec, itemsize, nthreads=STREAM_THREADS)
            total += now() - t0
            count += 1
            yield payload
        # uncompressed chunks are views sent as they are: a step of their own, not a codec's
        add("tcp.send.compress" if codec else "tcp.send.raw", count, total)


class Incoming:
    """A ``data`` reply whose STREAMED buffers are still arriving, one chunk a message.

    Each buffer is allocated once at its final size and every chunk is decompressed
    straight into its place, so nothing is joined or copied at the end.
    """

    def __init__(self, keys: list[str], descs_per_key: list, frames: list) -> None:
        self.keys = keys
        self.parts: list[list] = []  # per key: its buffers, in descriptor order
        self.pending: list[tuple] = []  # (out, codec, itemsize, step), in arrival order
        pos = 0
        for descs in descs_per_key:
            n = count_frames(descs)
            plain = iter(decode([d for d in descs if d[0] != STREAMED], frames[pos:pos + n]))
            pos += n
            bufs = []
            for d in descs:
                if d[0] != STREAMED:
                    bufs.append(next(plain))
                    continue
                _, codec, nbytes, itemsize = d
                if itemsize < 1 or nbytes < 0:
                    raise ValueError(f"bad streamed descriptor {d!r}")
                out = bufpool.pool.take(nbytes)
                bufs.append(out)
                self.pending.append((out, codec, itemsize, compression.stream_chunk(itemsize, nbytes, codec)))
            self.parts.append(bufs)
        self.offset = 0
        self.remaining = sum(-(-p[0].nbytes // p[3]) for p in self.pending)  # chunks to come
        self.error: ValueError | None = None
        self.busy = [0, 0]  # ns spent copying uncompressed chunks, and decompressing

    def feed(self, chunk: Any) -> bool:
        """Place the next chunk; True once the last one has arrived.

        A corrupt chunk is remembered (:meth:`values` raises it) and the rest are only
        counted, so the stream stays in step with the messages still to come.
        """
        self.remaining -= 1
        if self.error is None:
            t0 = now()
            compressed = self.pending[0][1] != compression.NONE
            try:
                self._place(chunk)
            except ValueError as e:
                self.error = e
            self.busy[compressed] += now() - t0
        return self.remaining <= 0

    def _place(self, chunk: Any) -> None:
        out, codec, itemsize, step = self.pending[0]
        end = min(self.offset + step, out.nbytes)
        compression.decompress_chunk(chunk, codec, out[self.offset:end], itemsize, nthreads=STREAM_THREADS)
        if end == out.nbytes:
            self.pending.pop(0)
            self.offset = 0
        else:
            self.offset = end

    def values(self) -> dict:
        """The reply's values, once every chunk arrived. ValueError if one was corrupt."""
        if self.error is not None:
            raise self.error
        copying, decompressing = self.busy
        if copying:
            recorder.add("tcp.recv.copy", 1, copying)
        if decompressing:
            recorder.add("tcp.recv.decompress", 1, decompressing)
        return {k: loads(bufs) for k, bufs in zip(self.keys, self.parts)}


def decode(descs: list, frames: list, segments: bool = False) -> list:
    """Buffers of one value from what :func:`encode` sent (segments mapped read-only;
    as :class:`~frisky.shm.Segment` objects when ``segments``; arena blocks as read-only
    views, pinned while they live)."""
    out: list = []
    _decode_into(out, descs, frames, 0, segments)
    return out


def _decode_into(out: list, descs: list, frames: list, pos: int, segments: bool = False) -> int:
    """Append the buffers of one value to ``out``, its frames read from ``frames[pos:]``;
    returns the position after them."""
    attach = _arena.attach
    for d in descs:
        kind = d[0]
        if kind == RAW:
            out.append(frames[pos])
            pos += 1
        elif kind == ARENA:
            out.append(attach(d[1], d[2], d[3], d[4]))
        elif kind == SHM:
            seg = shm.attach(d[1])
            out.append(seg if segments else seg.buf)
        elif kind == PACKED:
            out.append(compression.decode(d[1], frames[pos], d[2], d[3]))
            pos += 1
        else:
            raise ValueError(f"descriptor kind {kind!r} has no buffer here")
    return pos


def decode_values(keys: list[str], descs_per_key: list, frames: list) -> dict:
    """The values of a ``data`` reply: ``frames`` are the reply's frames after its header.

    Many small values are the common case (one task reading thousands of results): one
    pass, no per-value slicing of the frames or per-value helper lists beyond the buffers."""
    values = {}
    pos = 0
    unpickle = pickle.loads
    decode_into = _decode_into
    for key, descs in zip(keys, descs_per_key):
        bufs: list = []
        pos = decode_into(bufs, descs, frames, pos)
        values[key] = unpickle(bufs[0], buffers=bufs[1:])
    return values


REF_STREAM = 512  # largest pickle stream a same-host reference carries


def reference(frames: list) -> bytes | None:
    """A same-host reference to a value held in arena blocks: what :func:`encode` sends a
    same-host peer (the blocks' descriptors and the small pickle stream), packed into one
    blob, for a reader on this host to view the value without asking the holder (the
    scheduler forwards it opaquely). None when the value is not all in the arena.

    Safe to forward because a block is reused only after its generation is bumped: a
    reference that arrives after the value was freed and its block reused is refused by
    :func:`frisky.shm.arena.attach`, and the reader then asks the holder as usual."""
    if (len(frames) < 2 or memoryview(frames[0]).nbytes > REF_STREAM
            or not all(isinstance(f, _arena.Block) for f in frames[1:])):
        return None
    import msgpack

    descs, out = encode(frames, True, None)
    return msgpack.packb([descs, bytes(out[0])], use_bin_type=True)


def from_reference(ref: bytes) -> Any:
    """The value a :func:`reference` names, viewed in place; raises if it cannot be (a
    malformed reference, a block freed and reused, an arena gone)."""
    import msgpack

    descs, stream = msgpack.unpackb(ref, raw=False, use_list=True)
    if type(descs) is not list or type(stream) is not bytes:
        raise ValueError("a reference is [descriptors, stream]")
    bufs: list = []
    try:
        used = _decode_into(bufs, descs, [stream], 0)
    except (IndexError, TypeError, KeyError) as e:  # a descriptor of the wrong shape
        raise ValueError(f"malformed reference: {type(e).__name__}: {e}") from None
    if used != 1:
        raise ValueError("a reference carries its stream and nothing else")
    return pickle.loads(bufs[0], buffers=bufs[1:])


def count_frames(descs: list) -> int:
    """How many frames of the reply itself belong to these descriptors."""
    return sum(1 for d in descs if d[0] == RAW or d[0] == PACKED)


def streamed(descs_per_key: list) -> bool:
    """Whether a reply with these descriptors is followed by streamed chunks."""
    return any(d[0] == STREAMED for descs in descs_per_key for d in descs)
