"""Every message Frisky sends: its op, its fields, its encoding, and its parser.

A message is a list of ZeroMQ frames. Frame 0 is a msgpack header ``[op, *fields]``;
frames after it are opaque payloads (pickled by clients and workers, never by the
scheduler, which only moves them). Each op is a named type below, whose ``encode()``
gives the frames; one ``parse_*`` function per direction turns received frames into
those types, checking the op, the field count and types, the lengths that must agree
and that ids are not negative. Anything that does not parse raises
:class:`ProtocolError` (and nothing else): the receiver drops it and logs why.
Parsing checks the shape only; whether an id exists is the receiver's business.

Anyone -> scheduler (answered on any socket, registered or not)
  hello-client  [op, name]                        -> welcome
  hello-worker  [op, info]                        info: {address, name, nthreads, memory_limit, pid, host}
  where         [op, req, keys, token]            -> reply [per key: inline blob | holder address | None]
                answered only for keys the asking client wants: asked on its registered socket,
                or with the token of its welcome from another of its sockets; None otherwise
  info          [op, req]                         -> reply scheduler_info dict
  wait-workers  [op, req, n, timeout]             -> reply True once n workers joined, False at timeout

Client -> scheduler
  submit        [op, keys, fidx, fids, deps, retries, priority, workers, track, released]
                + msgpack(list of task payloads) + one function blob per fid
  release       [op, keys]                        the client no longer wants these keys
  cancel        [op, keys]                        the same, for futures the user cancelled
  cancel-queued [op, req, keys]                   -> reply [keys cancelled before reaching a worker]
  scatter       [op, keys, descs, workers]        + value frames; descs per key: None (one
                small frame the scheduler keeps) or data-plane descriptors (no STREAMED)
  activity      [op, kind, done, total, detail]  what the client is doing, for the dashboard:
                kind building | uploading (a graph of `total` tasks, `done` so far) | waiting
                (on `total` futures, `done` ready) | idle; detail: a short str
  heartbeat     [op]
  bye           [op]

Scheduler -> client
  welcome       [op, client_id, cluster_id, info, token]  token: names the client in its `where`s
  running       [op, keys]                        tasks handed to a worker (executor submits)
  results       [op, keys]                        + msgpack(per key: inline blob | holder address)
  erred         [op, keys, tracebacks]            + msgpack(per key: exception blob | [kind, text])
  reply         [op, req, value]
  heartbeat     [op]
  close         [op]

Worker -> scheduler
  finished      [op, tids, nbytes, timings, refs?] + msgpack(per task: inline blob | None)
                refs: {tid: same-host reference} for results held in the worker's arena
                timings: [[fid, count, seconds], ...]
  erred         [op, tids, tracebacks]            + msgpack(per task: exception blob)
  cancelled     [op, tids]                        tasks dropped before they started, as asked
  missing       [op, tid, keys]                   dependencies could not be fetched from their holders
  heartbeat     [op, metrics]
  bye           [op]

Scheduler -> worker
  welcome       [op, worker_id, cluster_id, info]
  refused       [op, reason]                     registration refused: a live worker holds that address or name
  compute       [op, tids, keys, fidx, fids, deps, where]
                + msgpack([payloads, function blobs, {dep key: inline blob}])
                where: {dep key: [holder address, nbytes, reference?]}  (a same-host
                holder's reference: the reader views the value without asking the holder)
  store         [op, tids, keys, descs]           + value frames (scattered values)
  free          [op, keys]
  cancel        [op, tids]
  heartbeat     [op]
  close         [op]

Peer (worker or client) -> a worker's data ROUTER
  get           [op, req, keys, same_host, stream, bulk]
                same_host: the asker maps shared memory, else buffers come compressed;
                stream (optional, default False): the asker takes STREAMED buffers;
                bulk (optional, default None): [ident, secret] to have the answer sealed
                with AES-256-GCM on the worker's plain bulk socket (``frisky.data.seal``):
                ident (16 bytes) names the asker's connection there, secret (32 bytes) is
                the link's secret; sent only inside CURVE. answered for any key the worker
                holds: knowing a key is the only claim checked here (peers are
                authenticated, if at all, by the sockets' ZAP policy)
Worker -> peer
  data          [op, req, keys, descs, missing]   + value frames; when a desc is STREAMED,
                the reply is followed by one message per chunk: a single frame, no header,
                in descriptor order (see ``frisky.data.dataplane.chunks``). For a bulk
                get, the reply and its chunks travel sealed on the bulk connection
  bulk          [op, req, port]                   answer to a bulk get whose ident has not
                attached yet: connect to the worker's bulk socket at ``port`` (same host)
                with that ident and send a sealed attach; the answer follows there

Data-plane descriptors (one per buffer of a value): [0] RAW (a frame follows),
[1, name, nbytes] SHM (a segment to map), [4, name, offset, nbytes, generation] ARENA
(a block of a host arena), [2, codec, nbytes, itemsize] PACKED (a
compressed frame follows), [3, codec, nbytes, itemsize] STREAMED (chunks follow the reply).

Common fields: a fid is :func:`function_id` of its blob (receivers check); keys are str; tids, reqs and ids are non-negative ints; ``fidx`` is an
int (one function for all tasks) or a per-task list of indices into ``fids``; ``deps``
is None or per task None or a list of keys; ``retries``/``priority`` an int for the
batch or a per-task list; ``workers`` None or a list of addresses or names; ``track``
asks for ``running``; ``released`` None or keys released just before these tasks.
"""

from __future__ import annotations

import hashlib
import math
import threading
from typing import Any, NamedTuple

import msgpack

# ops; several directions share a name (heartbeat, bye, erred, welcome, cancel)
HELLO_CLIENT = "hello-client"
HELLO_WORKER = "hello-worker"
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
WELCOME = "welcome"
REFUSED = "refused"
RUNNING = "running"
RESULTS = "results"
ERRED = "erred"
REPLY = "reply"
FINISHED = "finished"
CANCELLED = "cancelled"
MISSING = "missing"
COMPUTE = "compute"
STORE = "store"
FREE = "free"
CLOSE = "close"
ACTIVITY = "activity"
ACTIVITY_KINDS = ("building", "uploading", "waiting", "idle")
MAX_DETAIL = 200  # characters of an activity's detail
MAX_REF = 1024  # bytes of a same-host reference (block descriptors and a small pickle stream)
GET = "get"
DATA = "data"
BULK = "bulk"

# data-plane descriptor kinds (the data plane gives them meaning)
RAW, SHM, PACKED, STREAMED, ARENA = 0, 1, 2, 3, 4

_local = threading.local()


class ProtocolError(ValueError):
    """A message that does not parse. ``op`` is its op when that much was readable."""

    def __init__(self, why: str, op: Any = None) -> None:
        super().__init__(why)
        self.why = why
        self.op = op


# ------------------------------------------------------------------ encoding
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


def unpack(frame) -> Any:
    """Decode a msgpack header or payload frame (no checks: see the ``parse_*`` functions)."""
    return msgpack.unpackb(frame, raw=False, strict_map_key=False, use_list=True)


def header(*fields) -> bytes:
    """Encode ``[op, *fields]`` as frame 0."""
    return pack(fields)


def wire_key(key) -> str:
    """Keys are str or tuples (Dask style); on the wire every key is a string."""
    if type(key) is str:
        return key
    return str(key)


def function_id(blob: bytes) -> bytes:
    """A function's id: the 16-byte BLAKE2b of its blob, so any receiver can check the pair."""
    return hashlib.blake2b(blob, digest_size=16).digest()


# ------------------------------------------------------------------ checks
_INT = {int}
_STR = {str}
_BYTES = {bytes}


def _fail(why: str) -> None:
    raise ProtocolError(why)


def _id(x, what: str) -> int:
    if type(x) is not int or x < 0:
        _fail(f"{what} must be a non-negative int, not {x!r:.40}")
    return x


def _ids(xs, what: str) -> list:
    # C-speed checks: the hot ops carry thousands of ids
    if type(xs) is not list:
        _fail(f"{what} must be a list")
    if xs and (set(map(type, xs)) != _INT or min(xs) < 0):
        _fail(f"{what} must be non-negative ints")
    return xs


def _keys(xs, what: str = "keys") -> list:
    if type(xs) is not list:
        _fail(f"{what} must be a list")
    if xs and set(map(type, xs)) != _STR:
        _fail(f"{what} must be str")
    return xs


def _opt_keys(xs, what: str):
    return None if xs is None else _keys(xs, what)


def _blobs(xs, what: str, allowed: set) -> list:
    if type(xs) is not list:
        _fail(f"{what} must be a list")
    if xs and not set(map(type, xs)) <= allowed:
        _fail(f"{what}: unexpected item types")
    return xs


def _same_len(n: int, xs: list, what: str) -> None:
    if len(xs) != n:
        _fail(f"{what} has {len(xs)} items for {n} keys")


def _str(x, what: str) -> str:
    if type(x) is not str:
        _fail(f"{what} must be str")
    return x


def _bool(x, what: str) -> bool:
    if type(x) is not bool:
        _fail(f"{what} must be a bool")
    return x


def _dict(x, what: str) -> dict:
    if type(x) is not dict:
        _fail(f"{what} must be a map")
    return x


def _number(x, what: str) -> float:
    if type(x) not in (int, float) or not math.isfinite(x) or x < 0:
        _fail(f"{what} must be a finite non-negative number")
    return x


def _per_task_ints(x, n: int, what: str):
    """An int for the batch or a list of n ints."""
    if type(x) is int:
        return x
    if type(x) is not list or len(x) != n or (x and set(map(type, x)) != _INT):
        _fail(f"{what} must be an int or {n} ints")
    return x


def _deps(deps, n: int):
    if deps is None:
        return None
    if type(deps) is not list or len(deps) != n:
        _fail(f"deps must be None or one entry per task ({n})")
    for d in deps:
        if d is not None and (type(d) is not list or (d and set(map(type, d)) != _STR)):
            _fail("each task's deps must be None or a list of str keys")
    return deps


def _workers(x):
    if x is None:
        return None
    if type(x) is not list or (x and set(map(type, x)) != _STR):
        _fail("workers must be None or a list of str")
    return x


def _descriptor(d, streamed_ok: bool) -> int:
    """Check one data-plane descriptor; returns how many frames of the message it owns."""
    if type(d) is not list or not d or type(d[0]) is not int:
        _fail("a descriptor must be a list starting with its kind")
    kind = d[0]
    if kind == RAW:
        if len(d) != 1:
            _fail("RAW descriptor takes no fields")
        return 1
    if kind == ARENA:  # the common kind between workers of one host: checked without a generator
        if (len(d) != 5 or type(d[1]) is not str or type(d[2]) is not int or type(d[3]) is not int
                or type(d[4]) is not int or d[2] < 0 or d[3] <= 0 or d[4] < 0):
            _fail("ARENA descriptor must be [4, name, offset, nbytes > 0, generation]")
        return 0
    if kind == SHM:
        if len(d) != 3 or type(d[1]) is not str or type(d[2]) is not int or d[2] < 0:
            _fail("SHM descriptor must be [1, name, nbytes]")
        return 0
    if kind == PACKED or (kind == STREAMED and streamed_ok):
        if (len(d) != 4 or type(d[1]) is not int or d[1] < 0 or type(d[2]) is not int or d[2] < 0
                or type(d[3]) is not int or d[3] < 1):
            _fail("PACKED/STREAMED descriptor must be [kind, codec, nbytes, itemsize >= 1]")
        return 1 if kind == PACKED else 0
    _fail(f"unknown descriptor kind {kind!r}")


def _descs_per_key(descs_all, n: int, nframes: int, *, none_ok: bool, streamed_ok: bool) -> list:
    """Check a per-key list of descriptor lists against the number of frames that follow."""
    if type(descs_all) is not list or len(descs_all) != n:
        _fail(f"descs must be one entry per key ({n})")
    count = 0
    for descs in descs_all:
        if descs is None and none_ok:
            count += 1
            continue
        if type(descs) is not list or not descs:
            _fail("a value's descriptors must be a non-empty list")
        for d in descs:
            count += _descriptor(d, streamed_ok)
    if count != nframes:
        _fail(f"descriptors name {count} frames, {nframes} came")
    return descs_all


def _header(frames, lo: int = 1) -> list:
    """Frame 0 decoded: a list ``[op, ...]`` with a str op."""
    if not frames or len(frames) < lo:
        _fail("no frames")
    try:
        msg = unpack(frames[0])
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for garbage
        raise ProtocolError(f"header is not msgpack: {type(e).__name__}") from None
    if type(msg) is not list or not msg or type(msg[0]) is not str:
        _fail("header must be a list starting with an op")
    return msg


def _payload(frames, i: int, what: str) -> Any:
    if len(frames) <= i:
        _fail(f"{what} frame missing")
    try:
        return unpack(frames[i])
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for garbage
        raise ProtocolError(f"{what} frame is not msgpack: {type(e).__name__}") from None


def _fields(msg: list, n: int, lo: int | None = None) -> None:
    """``msg`` has ``n`` fields after its op (``lo``..``n`` when some are optional)."""
    k = len(msg) - 1
    if k > n or k < (n if lo is None else lo):
        _fail(f"{msg[0]!r:.30} takes {n} fields, got {k}")


def _frames_count(frames, n: int) -> None:
    if len(frames) != n:
        _fail(f"expected {n} frames, got {len(frames)}")


# ------------------------------------------------------------------ anyone -> scheduler
class HelloClient(NamedTuple):
    name: str

    def encode(self) -> list:
        return [header(HELLO_CLIENT, self.name)]


class HelloWorker(NamedTuple):
    """``info``: address and name (str), nthreads (int >= 1), memory_limit, pid (int or None), host."""

    info: dict

    def encode(self) -> list:
        return [header(HELLO_WORKER, self.info)]


class Where(NamedTuple):
    """Where the values of ``keys`` are. Answered only for keys the asking client wants
    (a registered client's socket, or ``token`` from its welcome on another socket of it)."""

    req: int
    keys: list
    token: str | None = None

    def encode(self) -> list:
        if self.token is None:
            return [header(WHERE, self.req, self.keys)]
        return [header(WHERE, self.req, self.keys, self.token)]


class Info(NamedTuple):
    req: int

    def encode(self) -> list:
        return [header(INFO, self.req)]


class WaitWorkers(NamedTuple):
    req: int
    n: int
    timeout: float

    def encode(self) -> list:
        return [header(WAIT_WORKERS, self.req, self.n, self.timeout)]


# ------------------------------------------------------------------ client -> scheduler
class Submit(NamedTuple):
    keys: list
    fidx: Any  # int, or a list of ints
    fids: list
    deps: list | None
    retries: Any
    priority: Any
    workers: list | None
    track: bool
    released: list | None
    payloads: list
    fn_blobs: list

    def encode(self) -> list:
        return [header(SUBMIT, self.keys, self.fidx, self.fids, self.deps, self.retries, self.priority,
                       self.workers, self.track, self.released), pack(self.payloads), *self.fn_blobs]


class Release(NamedTuple):
    keys: list

    def encode(self) -> list:
        return [header(RELEASE, self.keys)]


class Cancel(NamedTuple):
    keys: list

    def encode(self) -> list:
        return [header(CANCEL, self.keys)]


class CancelQueued(NamedTuple):
    req: int
    keys: list

    def encode(self) -> list:
        return [header(CANCEL_QUEUED, self.req, self.keys)]


class Scatter(NamedTuple):
    keys: list
    descs: list  # per key: None (one inline frame) or descriptors
    workers: list | None
    frames: list

    def encode(self) -> list:
        return [header(SCATTER, self.keys, self.descs, self.workers), *self.frames]


class Activity(NamedTuple):
    """What a client is doing (dashboard only): ``kind`` one of :data:`ACTIVITY_KINDS`."""

    kind: str
    done: int
    total: int
    detail: str = ""

    def encode(self) -> list:
        return [header(ACTIVITY, self.kind, self.done, self.total, self.detail)]


class Heartbeat(NamedTuple):
    def encode(self) -> list:
        return [header(HEARTBEAT)]


class Bye(NamedTuple):
    def encode(self) -> list:
        return [header(BYE)]


# ------------------------------------------------------------------ scheduler -> client
class Welcome(NamedTuple):
    """``token`` (clients only): names this client in queries from its other sockets (``where``)."""

    id: int
    cluster_id: str
    info: dict
    token: str | None = None

    def encode(self) -> list:
        if self.token is None:
            return [header(WELCOME, self.id, self.cluster_id, self.info)]
        return [header(WELCOME, self.id, self.cluster_id, self.info, self.token)]


class Refused(NamedTuple):
    """A worker's registration is refused; ``reason`` says why."""

    reason: str

    def encode(self) -> list:
        return [header(REFUSED, self.reason)]


class Running(NamedTuple):
    keys: list

    def encode(self) -> list:
        return [header(RUNNING, self.keys)]


class Results(NamedTuple):
    keys: list
    values: list  # per key: inline blob (bytes), the holder's address (str) or [address, reference]

    def encode(self) -> list:
        return [header(RESULTS, self.keys), pack(self.values)]


class Erred(NamedTuple):
    keys: list
    tracebacks: list
    excs: list  # per key: exception blob (bytes) or [kind, text]

    def encode(self) -> list:
        return [header(ERRED, self.keys, self.tracebacks), pack(self.excs)]


class Reply(NamedTuple):
    req: int  # -1 answers no request (an error notice)
    value: Any

    def encode(self) -> list:
        return [header(REPLY, self.req, self.value)]


class Close(NamedTuple):
    def encode(self) -> list:
        return [header(CLOSE)]


# ------------------------------------------------------------------ worker -> scheduler
class Finished(NamedTuple):
    tids: list
    nbytes: list
    timings: list  # [[fid, count, seconds], ...]
    blobs: list  # per task: inline result or None (held by the worker)
    refs: dict | None = None  # tid -> same-host reference of a held result in the arena

    def encode(self) -> list:
        if self.refs:
            return [header(FINISHED, self.tids, self.nbytes, self.timings, self.refs), pack(self.blobs)]
        return [header(FINISHED, self.tids, self.nbytes, self.timings), pack(self.blobs)]


class TaskErred(NamedTuple):
    tids: list
    tracebacks: list
    excs: list

    def encode(self) -> list:
        return [header(ERRED, self.tids, self.tracebacks), pack(self.excs)]


class Cancelled(NamedTuple):
    tids: list

    def encode(self) -> list:
        return [header(CANCELLED, self.tids)]


class Missing(NamedTuple):
    tid: int
    keys: list

    def encode(self) -> list:
        return [header(MISSING, self.tid, self.keys)]


class WorkerHeartbeat(NamedTuple):
    metrics: dict

    def encode(self) -> list:
        return [header(HEARTBEAT, self.metrics)]


# ------------------------------------------------------------------ scheduler -> worker
class Compute(NamedTuple):
    tids: list
    keys: list
    fidx: Any
    fids: list
    deps: list | None
    where: dict  # dep key -> [holder address, nbytes] (+ a same-host reference)
    payloads: list
    fn_blobs: list
    inline: dict  # dep key -> inline blob

    def encode(self) -> list:
        return [header(COMPUTE, self.tids, self.keys, self.fidx, self.fids, self.deps, self.where),
                pack([self.payloads, self.fn_blobs, self.inline])]


class Store(NamedTuple):
    tids: list
    keys: list
    descs: list
    frames: list

    def encode(self) -> list:
        return [header(STORE, self.tids, self.keys, self.descs), *self.frames]


class Free(NamedTuple):
    keys: list

    def encode(self) -> list:
        return [header(FREE, self.keys)]


class CancelTasks(NamedTuple):
    tids: list

    def encode(self) -> list:
        return [header(CANCEL, self.tids)]


# ------------------------------------------------------------------ peers <-> worker data
class Get(NamedTuple):
    req: int
    keys: list
    same_host: bool
    stream: bool = False
    bulk: list | None = None  # [ident, secret]: answer sealed on the bulk socket

    def encode(self) -> list:
        return [header(GET, self.req, self.keys, self.same_host, self.stream, self.bulk)]


class Bulk(NamedTuple):
    req: int
    port: int

    def encode(self) -> list:
        return [header(BULK, self.req, self.port)]


class Data(NamedTuple):
    req: int
    keys: list
    descs: list
    missing: list
    frames: list

    def encode(self) -> list:
        return [header(DATA, self.req, self.keys, self.descs, self.missing), *self.frames]


# ------------------------------------------------------------------ parsers
# the hot messages' tuples are built without the namedtuple's Python-level __new__
_new = tuple.__new__

def _functions(fidx, fids, n: int, blobs: list) -> None:
    if type(fids) is not list or (fids and set(map(type, fids)) != _BYTES):
        _fail("fids must be a list of bytes")
    if len(blobs) != len(fids):
        _fail(f"{len(fids)} fids but {len(blobs)} function frames")
    nf = len(fids)
    if type(fidx) is int:
        if not 0 <= fidx < nf and n:
            _fail("fidx out of range")
    elif type(fidx) is list:
        if len(fidx) != n:
            _fail(f"fidx has {len(fidx)} entries for {n} keys")
        if fidx and (set(map(type, fidx)) != _INT or min(fidx) < 0 or max(fidx) >= nf):
            _fail("fidx entries must index fids")
    else:
        _fail("fidx must be an int or a list of ints")


def _p_submit(msg, frames) -> Submit:
    _fields(msg, 9)
    _, keys, fidx, fids, deps, retries, priority, workers, track, released = msg
    n = len(_keys(keys))
    payloads = _payload(frames, 1, "payloads")
    if type(payloads) is not list or len(payloads) != n:
        _fail(f"payloads must be one per key ({n})")
    if n and set(map(type, payloads)) != _BYTES:
        _fail("payloads must be bytes")
    blobs = frames[2:]
    _functions(fidx, fids, n, blobs)
    return _new(Submit, (keys, fidx, fids, _deps(deps, n), _per_task_ints(retries, n, "retries"),
                         _per_task_ints(priority, n, "priority"), _workers(workers), _bool(track, "track"),
                         _opt_keys(released, "released"), payloads, blobs))


def _p_hello_client(msg, frames) -> HelloClient:
    _fields(msg, 1)
    return HelloClient(_str(msg[1], "name"))


def _p_hello_worker(msg, frames) -> HelloWorker:
    _fields(msg, 1)
    info = _dict(msg[1], "info")
    address = info.get("address")
    if type(address) is not str or "://" not in address:
        _fail("info.address must be an address str")
    _str(info.get("name", ""), "info.name")
    nthreads = info.get("nthreads", 1)
    if type(nthreads) is not int or not 1 <= nthreads <= 1 << 16:
        _fail("info.nthreads must be an int >= 1")
    for k in ("memory_limit", "pid"):
        v = info.get(k)
        if v is not None and (type(v) is not int or v < 0):
            _fail(f"info.{k} must be a non-negative int or None")
    host = info.get("host")
    if host is not None and type(host) is not str:
        _fail("info.host must be str or None")
    return HelloWorker(info)


def _p_where(msg, frames) -> Where:
    _fields(msg, 3, 2)
    token = msg[3] if len(msg) > 3 else None
    if token is not None:
        _str(token, "token")
    return Where(_id(msg[1], "req"), _keys(msg[2]), token)


def _p_info(msg, frames) -> Info:
    _fields(msg, 1)
    return Info(_id(msg[1], "req"))


def _p_wait_workers(msg, frames) -> WaitWorkers:
    _fields(msg, 3)
    return WaitWorkers(_id(msg[1], "req"), _id(msg[2], "n"), _number(msg[3], "timeout"))


def _p_release(msg, frames) -> Release:
    _fields(msg, 1)
    return _new(Release, (_keys(msg[1]),))


def _p_cancel(msg, frames) -> Cancel:
    _fields(msg, 1)
    return Cancel(_keys(msg[1]))


def _p_cancel_queued(msg, frames) -> CancelQueued:
    _fields(msg, 2)
    return CancelQueued(_id(msg[1], "req"), _keys(msg[2]))


def _p_scatter(msg, frames) -> Scatter:
    _fields(msg, 3)
    keys = _keys(msg[1])
    rest = frames[1:]
    descs = _descs_per_key(msg[2], len(keys), len(rest), none_ok=True, streamed_ok=False)
    return Scatter(keys, descs, _workers(msg[3]), rest)


def _p_activity(msg, frames) -> Activity:
    _fields(msg, 4)
    kind = msg[1]
    if kind not in ACTIVITY_KINDS:
        _fail(f"activity kind must be one of {', '.join(ACTIVITY_KINDS)}")
    detail = _str(msg[4], "detail")
    if len(detail) > MAX_DETAIL:
        _fail(f"detail is longer than {MAX_DETAIL} characters")
    return Activity(kind, _id(msg[2], "done"), _id(msg[3], "total"), detail)


def _p_heartbeat(msg, frames) -> Heartbeat:
    _fields(msg, 0)
    return Heartbeat()


def _p_bye(msg, frames) -> Bye:
    _fields(msg, 0)
    return Bye()


def _p_finished(msg, frames) -> Finished:
    _fields(msg, 4, 3)
    tids, nbytes, timings = msg[1], msg[2], msg[3]
    n = len(_ids(tids, "tids"))
    _same_len(n, _ids(nbytes, "nbytes"), "nbytes")
    if type(timings) is not list:
        _fail("timings must be a list")
    for t in timings:
        if (type(t) is not list or len(t) != 3 or type(t[0]) is not bytes or type(t[1]) is not int
                or t[1] < 1 or type(t[2]) not in (int, float) or not math.isfinite(t[2]) or t[2] < 0):
            _fail("timings entries must be [fid, count >= 1, seconds >= 0]")
    _frames_count(frames, 2)
    blobs = _blobs(_payload(frames, 1, "results"), "results", {bytes, type(None)})
    _same_len(n, blobs, "results")
    refs = None
    if len(msg) == 5:
        refs = _dict(msg[4], "refs")
        if len(refs) > n:
            _fail("more refs than tasks")
        for tid, ref in refs.items():
            if type(tid) is not int or type(ref) is not bytes or len(ref) > MAX_REF:
                _fail(f"refs must map tids to blobs of at most {MAX_REF} bytes")
    return _new(Finished, (tids, nbytes, timings, blobs, refs))


def _p_task_erred(msg, frames) -> TaskErred:
    _fields(msg, 2)
    tids = _ids(msg[1], "tids")
    tbs = _blobs(msg[2], "tracebacks", _STR)
    _same_len(len(tids), tbs, "tracebacks")
    _frames_count(frames, 2)
    excs = _blobs(_payload(frames, 1, "exceptions"), "exceptions", _BYTES)
    _same_len(len(tids), excs, "exceptions")
    return TaskErred(tids, tbs, excs)


def _p_cancelled(msg, frames) -> Cancelled:
    _fields(msg, 1)
    return Cancelled(_ids(msg[1], "tids"))


def _p_missing(msg, frames) -> Missing:
    _fields(msg, 2)
    return Missing(_id(msg[1], "tid"), _keys(msg[2]))


def _p_worker_heartbeat(msg, frames) -> WorkerHeartbeat:
    _fields(msg, 1)
    return WorkerHeartbeat(_dict(msg[1], "metrics"))


def _p_welcome(msg, frames) -> Welcome:
    _fields(msg, 4, 3)
    token = _str(msg[4], "token") if len(msg) > 4 else None
    return Welcome(_id(msg[1], "id"), _str(msg[2], "cluster_id"), _dict(msg[3], "info"), token)


def _p_refused(msg, frames) -> Refused:
    _fields(msg, 1)
    return Refused(_str(msg[1], "reason"))


def _p_running(msg, frames) -> Running:
    _fields(msg, 1)
    return Running(_keys(msg[1]))


def _p_results(msg, frames) -> Results:
    _fields(msg, 1)
    keys = _keys(msg[1])
    _frames_count(frames, 2)
    values = _blobs(_payload(frames, 1, "results"), "results", {bytes, str, list})
    _same_len(len(keys), values, "results")
    for v in values:
        if type(v) is list and (len(v) != 2 or type(v[0]) is not str or type(v[1]) is not bytes
                                or len(v[1]) > MAX_REF):
            _fail("a result held with a reference must be [address, reference]")
    return _new(Results, (keys, values))


def _exc_entry(x) -> bool:
    return type(x) is bytes or (type(x) is list and len(x) == 2 and type(x[0]) is str and type(x[1]) is str)


def _p_erred_client(msg, frames) -> Erred:
    _fields(msg, 2)
    keys = _keys(msg[1])
    tbs = _blobs(msg[2], "tracebacks", _STR)
    _same_len(len(keys), tbs, "tracebacks")
    _frames_count(frames, 2)
    excs = _payload(frames, 1, "exceptions")
    if type(excs) is not list or not all(map(_exc_entry, excs)):
        _fail("exceptions must be blobs or [kind, text]")
    _same_len(len(keys), excs, "exceptions")
    return Erred(keys, tbs, excs)


def _p_reply(msg, frames) -> Reply:
    _fields(msg, 2)
    if type(msg[1]) is not int or msg[1] < -1:
        _fail("req must be an int >= -1")
    return Reply(msg[1], msg[2])


def _p_close(msg, frames) -> Close:
    _fields(msg, 0)
    return Close()


def _p_compute(msg, frames) -> Compute:
    _fields(msg, 6)
    _, tids, keys, fidx, fids, deps, where = msg
    n = len(_ids(tids, "tids"))
    _same_len(n, _keys(keys), "keys")
    _frames_count(frames, 2)
    body = _payload(frames, 1, "compute body")
    if type(body) is not list or len(body) != 3:
        _fail("compute body must be [payloads, function blobs, inline]")
    payloads, fn_blobs, inline = body
    if type(payloads) is not list or len(payloads) != n or (n and set(map(type, payloads)) != _BYTES):
        _fail("payloads must be one blob per task")
    if type(fn_blobs) is not list or (fn_blobs and set(map(type, fn_blobs)) != _BYTES):
        _fail("function blobs must be bytes")
    _functions(fidx, fids, n, fn_blobs)
    deps = _deps(deps, n)
    _dict(where, "where")
    for k, v in where.items():
        if (type(k) is not str or type(v) is not list or not 2 <= len(v) <= 3 or type(v[0]) is not str
                or type(v[1]) is not int or (len(v) == 3 and (type(v[2]) is not bytes or len(v[2]) > MAX_REF))):
            _fail("where must map keys to [address, nbytes, reference?]")
    _dict(inline, "inline")
    if inline and (set(map(type, inline)) != _STR or set(map(type, inline.values())) != _BYTES):
        _fail("inline must map keys to blobs")
    return _new(Compute, (tids, keys, fidx, fids, deps, where, payloads, fn_blobs, inline))


def _p_store(msg, frames) -> Store:
    _fields(msg, 3)
    tids = _ids(msg[1], "tids")
    keys = _keys(msg[2])
    _same_len(len(keys), tids, "tids")
    rest = frames[1:]
    descs = _descs_per_key(msg[3], len(keys), len(rest), none_ok=False, streamed_ok=False)
    return Store(tids, keys, descs, rest)


def _p_free(msg, frames) -> Free:
    _fields(msg, 1)
    return Free(_keys(msg[1]))


def _p_cancel_tasks(msg, frames) -> CancelTasks:
    _fields(msg, 1)
    return CancelTasks(_ids(msg[1], "tids"))


def _p_get(msg, frames) -> Get:
    _fields(msg, 5, 3)
    stream = _bool(msg[4], "stream") if len(msg) > 4 else False
    bulk = msg[5] if len(msg) > 5 else None
    if bulk is not None:
        if (type(bulk) is not list or len(bulk) != 2 or type(bulk[0]) is not bytes or len(bulk[0]) != 16
                or type(bulk[1]) is not bytes or len(bulk[1]) != 32):
            _fail("bulk must be [16-byte ident, 32-byte secret]")
    return Get(_id(msg[1], "req"), _keys(msg[2]), _bool(msg[3], "same_host"), stream, bulk)


def _p_bulk(msg, frames) -> Bulk:
    _fields(msg, 2)
    port = _id(msg[2], "port")
    if not 0 < port < 65536:
        _fail(f"port {port} out of range")
    return Bulk(_id(msg[1], "req"), port)


def _p_data(msg, frames) -> Data:
    _fields(msg, 4)
    keys = _keys(msg[2])
    rest = frames[1:]
    descs = _descs_per_key(msg[3], len(keys), len(rest), none_ok=False, streamed_ok=True)
    return Data(_id(msg[1], "req"), keys, descs, _keys(msg[4], "missing"), rest)


_ANYONE = {
    HELLO_CLIENT: _p_hello_client, HELLO_WORKER: _p_hello_worker, WHERE: _p_where, INFO: _p_info,
    WAIT_WORKERS: _p_wait_workers,
}
_FROM_CLIENT = {
    **_ANYONE, SUBMIT: _p_submit, RELEASE: _p_release, CANCEL: _p_cancel, CANCEL_QUEUED: _p_cancel_queued,
    SCATTER: _p_scatter, HEARTBEAT: _p_heartbeat, BYE: _p_bye, ACTIVITY: _p_activity,
}
_FROM_WORKER = {
    **_ANYONE, FINISHED: _p_finished, ERRED: _p_task_erred, CANCELLED: _p_cancelled, MISSING: _p_missing,
    HEARTBEAT: _p_worker_heartbeat, BYE: _p_bye,
}
_TO_CLIENT = {
    WELCOME: _p_welcome, RUNNING: _p_running, RESULTS: _p_results, ERRED: _p_erred_client, REPLY: _p_reply,
    HEARTBEAT: _p_heartbeat, CLOSE: _p_close,
}
_TO_WORKER = {
    WELCOME: _p_welcome, REFUSED: _p_refused, COMPUTE: _p_compute, STORE: _p_store, FREE: _p_free,
    CANCEL: _p_cancel_tasks, HEARTBEAT: _p_heartbeat, CLOSE: _p_close,
}
_TO_PEER = {GET: _p_get}
_FROM_PEER = {DATA: _p_data, BULK: _p_bulk}

#: every op each direction accepts (the message table of docs/architecture.md)
DIRECTIONS = {
    "client -> scheduler": _FROM_CLIENT, "worker -> scheduler": _FROM_WORKER,
    "scheduler -> client": _TO_CLIENT, "scheduler -> worker": _TO_WORKER,
    "peer -> worker": _TO_PEER, "worker -> peer": _FROM_PEER,
}


# ops whose message is the header alone
_HEADER_ONLY = {
    _p_hello_client, _p_hello_worker, _p_where, _p_info, _p_wait_workers, _p_release, _p_cancel,
    _p_cancel_queued, _p_heartbeat, _p_bye, _p_cancelled, _p_missing, _p_worker_heartbeat, _p_welcome,
    _p_running, _p_reply, _p_close, _p_free, _p_cancel_tasks, _p_get, _p_refused, _p_bulk, _p_activity,
}


def _parse(table: dict, frames) -> Any:
    msg = _header(frames)
    op = msg[0]
    parser = table.get(op)
    if parser is None:
        raise ProtocolError(f"unknown op {op!r:.40}", None)
    try:
        if len(frames) != 1 and parser in _HEADER_ONLY:
            _fail(f"{op} is one frame, got {len(frames)}")
        return parser(msg, frames)
    except ProtocolError as e:
        e.op = op
        raise
    except Exception as e:  # noqa: BLE001 - a shape the checks above did not foresee
        raise ProtocolError(f"malformed {op}: {type(e).__name__}: {e}"[:200], op) from None


def parse_from_client(frames: list) -> Any:
    """What a client (or any unregistered peer) sent the scheduler; ``frames`` without the routing id."""
    return _parse(_FROM_CLIENT, frames)


def parse_from_worker(frames: list) -> Any:
    """What a registered worker sent the scheduler; ``frames`` without the routing id."""
    return _parse(_FROM_WORKER, frames)


def parse_to_client(frames: list) -> Any:
    """What the scheduler sent a client."""
    return _parse(_TO_CLIENT, frames)


def parse_to_worker(frames: list) -> Any:
    """What the scheduler sent a worker."""
    return _parse(_TO_WORKER, frames)


def parse_get(frames: list) -> Get:
    """A peer's request to a worker's data ROUTER; ``frames`` without the routing id."""
    return _parse(_TO_PEER, frames)


def parse_data(frames: list) -> Data | Bulk:
    """A worker's ``data`` reply, or its ``bulk`` pointer to the bulk socket (frames may be
    buffers or ``zmq.Frame`` buffers)."""
    return _parse(_FROM_PEER, frames)
