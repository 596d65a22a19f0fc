"""How a large value travels: shared memory on one host, compressed frames across hosts.

A large value is serialized once (pickle protocol 5): a small stream plus raw buffers.
When it is produced, every buffer of at least ``shm_threshold`` bytes is written once
into a POSIX shared-memory segment and the value is rebuilt as views of those segments,
so the heap copy is freed. A consumer on the same host (``ipc://``/``inproc://`` peers)
receives only segment names and maps them read-only: a NumPy array arrives as a view,
with no copy. A consumer across TCP receives the bytes, each buffer compressed by a
codec chosen by sampling it (none when it does not pay).

On the wire a value is a list of descriptors, one per frame, and the frames that follow:
  [RAW]                             the next frame, as is
  [SHM, name, nbytes]               a segment to map (no frame follows)
  [PACKED, codec, nbytes, itemsize] the next frame, compressed
"""

from __future__ import annotations

import pickle
from typing import Any

from frisky import compression, config, shm

RAW, SHM, PACKED = 0, 1, 2


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
        total += f.size if isinstance(f, shm.Segment) else memoryview(f).nbytes
    return total


def share(frames: Frames, cluster_id: str, registry: shm.Registry, threshold: int | None = None) -> Frames:
    """Move buffers of at least ``threshold`` bytes into new segments (owned by ``registry``)."""
    threshold = config.get("shm_threshold", threshold)
    out = Frames([frames[0]])
    out.itemsizes = frames.itemsizes
    for f in frames[1:]:
        if memoryview(f).nbytes >= threshold:
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
    return [f.buf if isinstance(f, shm.Segment) else f for f in frames]


def release(frames: list, registry: shm.Registry) -> None:
    """The producer drops its value: unlink its segments (mappings elsewhere stay valid)."""
    for f in frames:
        if isinstance(f, shm.Segment):
            registry.decref(f.name)


def encode(frames: list, same_host: bool, compress: bool) -> tuple[list, list]:
    """Descriptors and frames to send ``frames`` to a peer."""
    descs: list = []
    out: list = []
    itemsizes = getattr(frames, "itemsizes", None)
    for i, f in enumerate(frames):
        if isinstance(f, shm.Segment):
            if same_host:
                descs.append([SHM, f.name, f.size])
                continue
            f = f.buf
        if compress and i > 0 and memoryview(f).nbytes >= 1024:
            itemsize = itemsizes[i] if itemsizes else 1
            codec, payload = compression.encode(f, itemsize=itemsize, prefer="lz4")
            if codec != compression.NONE:
                descs.append([PACKED, codec, memoryview(f).nbytes, itemsize])
                out.append(payload)
                continue
        descs.append([RAW])
        out.append(f)
    return descs, out


def decode(descs: list, frames: list, segments: bool = False) -> list:
    """Buffers of one value from what :func:`encode` sent (segments mapped read-only;
    as :class:`~frisky.shm.Segment` objects when ``segments``)."""
    out = []
    pos = 0
    for d in descs:
        kind = d[0]
        if kind == SHM:
            seg = shm.attach(d[1])
            out.append(seg if segments else seg.buf)
        elif kind == PACKED:
            out.append(compression.decode(d[1], frames[pos], d[2], d[3]))
            pos += 1
        else:
            out.append(frames[pos])
            pos += 1
    return out


def decode_values(keys: list[str], descs_per_key: list, frames: list) -> dict:
    """The values of a ``data`` reply: ``frames`` are the reply's frames after its header."""
    values = {}
    pos = 0
    for key, descs in zip(keys, descs_per_key):
        n = count_frames(descs)
        values[key] = loads(decode(descs, frames[pos:pos + n]))
        pos += n
    return values


def count_frames(descs: list) -> int:
    """How many wire frames follow for these descriptors."""
    return sum(1 for d in descs if d[0] != SHM)
