"""The client's I/O thread: it alone owns the socket to the scheduler.

It sends what user threads queued (single submissions batched into one message per run,
releases riding with them) and completes futures and map jobs as results arrive. A mixin
of :class:`~frisky.client.client.Client`.
"""

from __future__ import annotations

import time
from concurrent.futures import InvalidStateError
from typing import Any

import zmq

from frisky import config, logs, protocol
from frisky.client.future import Future, Remote
from frisky.client.map_job import Failed, MapJob
from frisky.data.serialize import attach_traceback
from frisky.errors import _ERROR_KINDS, FriskyError, SchedulerGone
from frisky.protocol import pack, unpack
from frisky.zmq import sockets

_LAZY_FLUSH_MS = 5  # releases wait at most this long for a ride with other traffic
_dropped = logs.Dropped(logs.logger("client"), "message")


class ClientIO:
    """The I/O thread's loop and what it does with each message."""

    def _io_loop(self) -> None:
        sock = self.sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.waker.rfd, zmq.POLLIN)
        interval = config.get("heartbeat_interval")
        silence = config.get("heartbeat_timeout")
        last_heard = time.monotonic()
        next_beat = last_heard + interval
        beat = [protocol.header(protocol.HEARTBEAT)]
        active = False
        while not self._closed:
            timeout_ms = max(0, int((next_beat - time.monotonic()) * 1000)) + 1
            if active:
                self._io_dozing = False
                timeout_ms = min(timeout_ms, _LAZY_FLUSH_MS)
            else:
                # set before looking at the outbox: a release appended after the look
                # sees the flag and wakes us
                self._io_dozing = True
                if self._outbox:
                    self._flush_outbox()
            events = poller.poll(timeout_ms)
            active = bool(events)
            for item, _ in events:
                if item is sock:
                    last_heard = time.monotonic()
                    if not self._read():
                        self._scheduler_lost("the scheduler closed")
                        return
                else:
                    self.waker.drain()
            self._flush_outbox()
            t = time.monotonic()
            if t >= next_beat:
                if t - last_heard > silence:
                    self._scheduler_lost(f"the scheduler was silent for {silence}s")
                    return
                sock.send_multipart(beat)
                next_beat = t + interval
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        """Send everything queued, in order: single submissions (tuples) are packed into one
        message per run, releases (str keys) ride with the run after them or go alone."""
        sock = self.sock
        outbox = self._outbox
        run: list[tuple] = []
        releases: list[str] = []
        released: list[str] | None = None  # releases queued before ``run``
        while outbox:
            item = outbox.popleft()
            t = type(item)
            if t is tuple:
                if releases:
                    if run:
                        sockets.send(sock, _submit_frames(run, released), False)
                        run = []
                    released = self._releasable(releases)
                    releases = []
                if run and (item[5:] != run[0][5:] or len(run) >= self._max_batch):
                    sockets.send(sock, _submit_frames(run, released), False)
                    run, released = [], None
                run.append(item)
                continue
            if t is str:
                releases.append(item)
                continue
            if run:
                sockets.send(sock, _submit_frames(run, released), False)
                run, released = [], None
            if releases:
                self._send_releases(releases)
                releases = []
            sockets.send(sock, item, False)
        if run:
            sockets.send(sock, _submit_frames(run, released), False)
        if releases:
            self._send_releases(releases)

    def _releasable(self, wkeys: list[str]) -> list[str]:
        """The keys among ``wkeys`` whose futures are gone (not revived by a new submission)."""
        keys = []
        futures = self._futures
        with self._lock:
            for k in wkeys:
                ref = futures.get(k)
                f = None if ref is None else ref()
                if ref is not None and (f is None or "_dead" in f.__dict__):
                    del futures[k]
                    keys.append(k)
        return keys

    def _send_releases(self, wkeys: list[str]) -> None:
        keys = self._releasable(wkeys)
        if keys:
            sockets.send(self.sock, [protocol.header(protocol.RELEASE, keys)])

    def _read(self) -> bool:
        sock = self.sock
        for _ in range(1000):
            frames = sockets.recv(sock)
            if frames is None:
                return True
            try:
                msg = protocol.parse_to_client(frames)
            except protocol.ProtocolError as e:
                self._malformed(frames, e)
                continue
            kind = type(msg)
            try:
                if kind is protocol.Results:
                    self._on_results(msg.keys, msg.values)
                elif kind is protocol.Reply:
                    slot = self._requests.pop(msg.req, None)
                    if slot is not None:
                        slot.append(msg.value)
                        slot[0].set()
                elif kind is protocol.Running:
                    for wkey in msg.keys:
                        f = self._live(wkey)
                        if f is not None and f._state == "PENDING":
                            f.set_running_or_notify_cancel()
                elif kind is protocol.Erred:
                    self._on_erred(msg.keys, msg.excs, msg.tracebacks)
                elif kind is protocol.Close:
                    return False
            except Exception as e:  # noqa: BLE001 - our bug: the I/O thread must keep serving
                _dropped("scheduler", type(msg).__name__, f"{type(e).__name__}: {e}", exc_info=e)
        return True

    def _malformed(self, frames: list, e: protocol.ProtocolError) -> None:
        """A message from the scheduler that does not parse: fail what it answers, if that
        much can be read (the request, or the keys), and log it."""
        _dropped("scheduler", e.op, e.why)
        error = FriskyError(f"a malformed {e.op or 'message'} from the scheduler: {e.why}")
        try:
            head = unpack(frames[0])
        except Exception:  # noqa: BLE001 - not even a header: nothing to fail
            return
        if type(head) is not list or len(head) < 2:
            return
        if e.op == protocol.REPLY and type(head[1]) is int:
            slot = self._requests.pop(head[1], None)
            if slot is not None:
                slot.append(error)
                slot[0].set()
        elif e.op in (protocol.RESULTS, protocol.ERRED) and type(head[1]) is list:
            keys = [k for k in head[1] if type(k) is str]
            self._on_erred(keys, [["error", str(error)]] * len(keys), [""] * len(keys))

    def _live(self, wkey: str) -> Future | None:
        ref = self._futures.get(wkey)
        return None if ref is None else ref()

    def _on_results(self, keys: list[str], blobs: list) -> None:
        loads = self.codec.loads_value
        if self._news:
            self._tell_news(keys, [b[0] if type(b) is list else b for b in blobs])
        jobs = self._jobs
        touched: set[MapJob] | None = None
        for wkey, blob in zip(keys, blobs):
            if jobs:
                head, _, index = wkey.rpartition(".")
                job = jobs.get(head)
                if job is not None:
                    try:
                        value = _remote(blob) if type(blob) is not bytes else loads(blob)
                    except Exception as e:  # noqa: BLE001 - e.g. a class missing here
                        value = Failed(e)
                    job.put(int(index, 16), value)
                    if touched is None:
                        touched = set()
                    touched.add(job)
                    continue
            f = self._live(wkey)
            if f is None:
                continue
            if type(blob) is not bytes:
                if f.done():  # recomputed elsewhere: a later fetch goes there first
                    if type(f._result) is Remote:
                        new = _remote(blob)
                        f._result.address, f._result.ref = new.address, new.ref
                    continue
                value = _remote(blob)
            else:
                try:
                    value = loads(blob)
                except Exception as e:  # noqa: BLE001 - e.g. a class missing here
                    _set(f, exc=e)
                    continue
            _set(f, value)
        if self._held:  # after completing them: a held future may be the only reference
            self._unhold(keys)
        if touched:
            self._jobs_touched(touched)

    def _jobs_touched(self, jobs: set[MapJob]) -> None:
        for job in jobs:
            job.notify()
            if job.closed:
                self._job_maybe_done(job)

    def _unhold(self, keys: list[str]) -> None:
        pop = self._held.pop
        for k in keys:
            pop(k, None)

    def _on_erred(self, keys: list[str], excs: list, tbs: list[str]) -> None:
        touched: set[MapJob] = set()
        news = self._news
        for wkey, blob, tb in zip(keys, excs, tbs):
            head, _, index = wkey.rpartition(".")
            job = self._jobs.get(head)
            f = self._live(wkey) if job is None else None
            if job is None and f is None and wkey not in news:
                continue
            if type(blob) is list:
                kind, text = blob
                exc: BaseException = _ERROR_KINDS.get(kind, FriskyError)(text)
            else:
                try:
                    exc = self.codec.loads_exception(blob)
                except Exception as e:  # noqa: BLE001 - table entry gone
                    exc = FriskyError(f"task {wkey!r} failed: {e!r}")
                attach_traceback(exc, tb)
            if news:
                self._tell_news([wkey], [exc])
            if job is not None:
                job.put(int(index, 16), Failed(exc))
                touched.add(job)
            elif f is not None:
                if type(f._result) is Remote:  # its value was lost for good: a fetch says so
                    f._result.error = exc
                _set(f, exc=exc)
        if self._held:  # after completing them: a held future may be the only reference
            self._unhold(keys)
        if touched:
            self._jobs_touched(touched)

    def _tell_news(self, keys: list[str], outcomes: list) -> None:
        """Wake fetches waiting for a lost value to be recomputed: an inline blob, a holder's
        address or an exception per key."""
        news = self._news
        for wkey, outcome in zip(keys, outcomes):
            slot = news.get(wkey)
            if slot is not None and len(slot) == 1:
                slot.append(outcome)
                slot[0].set()

    def _tell_news_all(self, exc: BaseException) -> None:
        for slot in list(self._news.values()):
            if len(slot) == 1:
                slot.append(exc)
                slot[0].set()

    def _scheduler_lost(self, why: str) -> None:
        self._lost = True
        self.status = "lost"
        with self._lock:
            futures = [r() for r in self._futures.values()]
        for f in futures:
            if f is not None and not f.done():
                _set(f, exc=SchedulerGone(f"{why}; the result of {f.key!r} is lost"))
        self._held.clear()
        self._tell_news_all(SchedulerGone(f"{why}; a result being recomputed is lost"))
        for job in list(self._jobs.values()):
            job.fail(SchedulerGone(f"{why}; the results of a map are lost"))


def _remote(held: str | list) -> Remote:
    """A result held by a worker: its address, or ``[address, same-host reference]``."""
    return Remote(held) if type(held) is str else Remote(held[0], held[1])


def _submit_frames(run: list[tuple], released: list[str] | None = None) -> list:
    """One ``submit`` message for queued single submissions sharing retries/priority/workers,
    carrying the keys released just before them (one message, one wake-up, instead of two)."""
    fid_index: dict[bytes, int] = {}
    fblobs: list = []
    fidx: list[int] = []
    for t in run:
        i = fid_index.get(t[1])
        if i is None:
            i = fid_index[t[1]] = len(fblobs)
            fblobs.append(t[2])
        fidx.append(i)
    deps = [t[4] for t in run]
    if not any(deps):
        deps = None
    _, _, _, _, _, retries, priority, workers, track = run[0]
    return [protocol.header(protocol.SUBMIT, [t[0] for t in run], 0 if len(fblobs) == 1 else fidx,
                            list(fid_index), deps, retries, priority, workers, track, released),
            pack([t[3] for t in run]), *fblobs]


def _set(f: Future, value: Any = None, exc: BaseException | None = None) -> None:
    try:
        if exc is not None:
            f.set_exception(exc)
        else:
            f.set_result(value)
    except InvalidStateError:  # cancelled meanwhile
        pass
