"""Every message Frisky sends, and its framing. Nothing else lives here.

A message is a list of ZeroMQ frames. Frame 0 is a msgpack header ``[op, *fields]``.
Frames after it are opaque payloads (pickled by clients and workers, never by the
scheduler, which only moves them). Ops are short strings, fields positional.

Client -> scheduler
  hello-client  [op, name]
  submit        [op, keys, fidx, fids, deps, retries, priority, workers, track, released]
                frames: header, msgpack(list of task payloads), *function blobs (one per fids)
                fidx: int (one function for all tasks) or list[int] indexing fids
                deps: None or per-task list of dependency keys (or None)
                retries, priority: int for the batch or per-task list; workers: None or list of addresses
                track: send `running` when these tasks are handed to a worker (executor submit)
                released: None or keys released before these tasks (as a `release` would)
  release       [op, keys]                      client no longer wants these keys
  cancel-queued [op, req, keys]                 cancel those not yet handed to a worker -> reply [keys cancelled]
  cancel        [op, keys]
  scatter       [op, keys, descs, workers]     frames: header, *value frames; descs per key:
                None (one small frame, kept inline) or data-plane descriptors (see dataplane.py)
  where         [op, req, keys]                 -> reply [where per key: bytes blob | address | None]
  info          [op, req]                       -> reply scheduler_info dict
  wait-workers  [op, req, n, timeout]           -> reply True once n workers joined, False at timeout
                (where, info and wait-workers are answered on any socket, registered or not)
  heartbeat     [op]
  bye           [op]

Scheduler -> client
  welcome       [op, client_id, cluster_id, info]
  running       [op, keys]                      these tasks were handed to a worker (executors)
  results       [op, keys]                      frames: header, msgpack(list of bytes blob | str worker address)
  erred         [op, keys, tracebacks]          frames: header, msgpack(list of exception blobs)
  cancelled     [op, keys, reason]
  reply         [op, req, value]                frames: header, *optional frames
  heartbeat     [op]

Worker -> scheduler
  hello-worker  [op, info]                      info: name, address, nthreads, memory_limit, pid, host
  finished      [op, tids, nbytes, timings]     frames: header, msgpack(list of bytes blob | None)
                timings: [[fid, count, seconds], ...]
  erred         [op, tids, tracebacks]          frames: header, msgpack(list of exception blobs)
  cancelled     [op, tids]                      acknowledges cancel of tasks not started
  missing       [op, tid, keys]                 dependencies could not be fetched from their holders
  heartbeat     [op, metrics]

Scheduler -> worker
  welcome       [op, worker_id, cluster_id, info]
  refused       [op, reason]                    registration refused (address or name held by a live worker)
  compute       [op, tids, keys, fidx, fids, deps, where]
                frames: header, msgpack([payloads, function blobs, {dep key: inline blob}])
                deps: None or per-task list of dependency keys; where: {dep key: [peer address, nbytes]}
  store         [op, tids, keys, descs]         frames: header, *value frames (scatter)
  free          [op, keys]
  cancel        [op, tids]
  heartbeat     [op]
  close         [op]

Peer (worker or client) -> worker's own ROUTER
  get           [op, req, keys, same_host]      -> data [op, req, keys, descs, missing] + frames
                same_host: the asker maps shared memory; otherwise buffers come compressed
"""

from __future__ import annotations

import threading

import msgpack

# client -> scheduler
HELLO_CLIENT = "hello-client"
SUBMIT = "submit"
RELEASE = "release"
CANCEL = "cancel"
CANCEL_QUEUED = "cancel-queued"
SCATTER = "scatter"
WHERE = "where"
INFO = "info"
WAIT_WORKERS = "wait-workers"
HEARTBEAT = "heartbeat"
BYE = "bye"
# scheduler -> client
WELCOME = "welcome"
RUNNING = "running"
RESULTS = "results"
ERRED = "erred"
CANCELLED = "cancelled"
REPLY = "reply"
# worker -> scheduler
HELLO_WORKER = "hello-worker"
FINISHED = "finished"
MISSING = "missing"
# scheduler -> worker
REFUSED = "refused"
COMPUTE = "compute"
STORE = "store"
FREE = "free"
CLOSE = "close"
# peer -> worker
GET = "get"
DATA = "data"

_local = threading.local()


def pack(obj) -> bytes:
    """Encode ``obj`` with msgpack (bin type for bytes)."""
    # a Packer per thread, kept: ``msgpack.packb`` makes a new one with a 256 KiB buffer
    # each call, which under the workers' low mmap threshold is an mmap + munmap per message
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(buf_size=16384)
    out = packer.pack(obj)
    if len(out) > 1 << 20:
        _local.packer = None  # don't keep a big buffer alive for the thread's lifetime
    return out


def unpack(frame) -> list:
    """Decode a msgpack header or payload frame."""
    return msgpack.unpackb(frame, raw=False, strict_map_key=False, use_list=True)


def header(*fields) -> bytes:
    """Encode ``[op, *fields]`` as frame 0."""
    return pack(fields)


def wire_key(key) -> str:
    """Keys are str or tuples (Dask style); on the wire every key is a string."""
    if type(key) is str:
        return key
    return str(key)
