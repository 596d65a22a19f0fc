"""How a client gets values: from the worker holding them, or the scheduler's news of them.

Each user thread has its own sockets (a done-callback may call ``result()`` without
waiting on the I/O thread); a value whose holder died is awaited on the scheduler's news
(recomputed or failed), never polled in a loop. A mixin of
:class:`~frisky.client.client.Client`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from frisky import config, protocol
from frisky.client.future import Future, Remote
from frisky.data import dataplane, seal
from frisky.errors import ClientClosed, FriskyError, SchedulerGone
from frisky.telemetry import now, recorder
from frisky.zmq import bulk, sockets

log = logging.getLogger("frisky.client")

_NEWS_RECHECK = 1.0  # seconds between asking where a recomputed value is, as a safety net
_HOLDER_RECHECK = 0.5  # seconds between asking whether a worker slow to answer still holds a value


class _Refused(Exception):
    """A sealed reply failed to open (its link is dropped; the fetch may be asked again)."""


class ClientFetch:
    """Fetching values from workers and asking the scheduler, on per-thread sockets."""

    def _prefetch(self, futures: list[Future]) -> None:
        """Fetch remote results of many futures with one request per worker."""
        by_addr: dict[str, list[Future]] = {}
        for f in futures:
            f._wait()
            remote = f._result
            if type(remote) is Remote and f._state == "FINISHED":
                if remote.ref is not None:
                    value = _viewed(remote)
                    if value is not _NOT_VIEWED:
                        f._result = value
                        continue
                by_addr.setdefault(remote.address, []).append(f)
        for address, fs in by_addr.items():
            try:
                values = self._get_from(address, [f._wkey for f in fs], self.timeout,
                                        still_holder=lambda a=address, k=fs[0]._wkey: self._holder(k) == a)
            except (TimeoutError, OSError, zmq.ZMQError):
                continue  # result() will find the data again, or say why not
            for f in fs:
                if f._wkey in values:
                    f._result = values[f._wkey]

    def _fetch_remote(self, wkey: str, key: Any, remote: Remote, timeout: float | None) -> Any:
        """The value of ``wkey`` held by a worker (``remote``), wherever it is by now.

        Every wait ends: a closed client raises at once, a lost scheduler raises, and a value
        its holder lost is awaited on the scheduler's news of it (recomputed or failed),
        never polled in a loop; ``timeout`` bounds the whole call.
        """
        if remote.ref is not None:
            value = _viewed(remote)
            if value is not _NOT_VIEWED:
                return value
        deadline = None if timeout is None else time.monotonic() + timeout
        address = remote.address
        while True:
            self._check_fetchable(key, address)
            if remote.error is not None:
                raise remote.error
            left = self.timeout if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                values = self._get_from(address, [wkey], min(left, self.timeout),
                                        still_holder=lambda a=address: self._holder(wkey) == a)
                if wkey in values:
                    return values[wkey]
            except (TimeoutError, OSError, zmq.ZMQError):
                self._check_fetchable(key, address)  # closed meanwhile: say so, not "timed out"
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"could not fetch the result of {key!r} from {address} within {timeout}s")
            # the holder lost it or died: the scheduler knows where it is now, or recomputes it
            where = self._where_now(wkey, key, remote, deadline)
            if type(where) is not str:
                return self.codec.loads_value(where)
            address = where

    def _holder(self, wkey: str) -> Any:
        """What the scheduler says of ``wkey`` now: a holder's address, an inline blob, or None."""
        return self._query(protocol.WHERE, [wkey], self._token)[0]

    def _check_fetchable(self, key: Any, address: str) -> None:
        if self._closed:
            raise ClientClosed(f"this Client is closed: the result of {key!r} on {address} "
                               "can no longer be fetched")

    def _where_now(self, wkey: str, key: Any, remote: Remote, deadline: float | None) -> Any:
        """Where ``wkey``'s value is now (an address or an inline blob); waits for the
        scheduler's news while it is recomputed, and raises the task's error if it failed."""
        slot: list = [threading.Event()]
        self._news[wkey] = slot  # before asking: news arriving meanwhile is not missed
        try:
            while True:
                if self._lost:
                    raise SchedulerGone(f"the scheduler at {self.scheduler_address} is gone; "
                                        f"the result of {key!r} is lost")
                if remote.error is not None:  # reported before this wait began
                    raise remote.error
                where = self._holder(wkey)
                if where is not None:
                    return where
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"the result of {key!r} was lost by its worker and was not "
                                       "recomputed in time")
                # news comes with the key's results or error; ask again now and then in case
                # it came before this wait began
                if slot[0].wait(_NEWS_RECHECK if left is None else min(left, _NEWS_RECHECK)):
                    self._check_fetchable(key, "the cluster")
                    outcome = slot[1]
                    if isinstance(outcome, BaseException):
                        raise outcome
                    return outcome
        finally:
            if self._news.get(wkey) is slot:
                del self._news[wkey]

    def _per_thread(self, name: str) -> dict:
        """This thread's own ``name`` dict (address -> socket or link)."""
        d = getattr(self._local, name, None)
        if d is None:
            d = {}
            setattr(self._local, name, d)
        return d

    def _thread_socket(self, address: str) -> zmq.Socket:
        socks = self._per_thread("socks")
        s = socks.get(address)
        if s is None:
            ctx = sockets.context_for(address) if address.startswith("inproc://") else self.ctx
            s = socks[address] = sockets.dealer(ctx, address, keys=self.keys)
            with self._lock:
                self._thread_sockets.append(s)
        return s

    def _get_from(self, address: str, wkeys: list[str], timeout: float,
                  still_holder: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Values of ``wkeys`` from the worker at ``address``. A slow answer is waited for
        while ``still_holder()`` says the scheduler still lists that worker as the holder;
        one the scheduler has declared dead is abandoned at once. With keys, the answer from
        a worker over TCP comes sealed on its bulk socket (:mod:`frisky.zmq.bulk`); a sealed
        answer that is refused is asked for once more, on a new link."""
        try:
            return self._get_once(address, wkeys, timeout, still_holder)
        except _Refused:
            pass
        try:
            return self._get_once(address, wkeys, timeout, still_holder)
        except _Refused as e:
            raise FriskyError(f"a reply from worker {address} was refused twice: {e}") from None

    def _get_once(self, address: str, wkeys: list[str], timeout: float,
                  still_holder: Callable[[], bool] | None) -> dict[str, Any]:
        s = self._thread_socket(address)
        link = self._bulk_link(address) if self.keys is not None and address.startswith("tcp://") else None
        req = next(self._counter)
        t0 = now()
        get = protocol.Get(req, wkeys, not address.startswith("tcp://"), False, link.field if link else None)
        s.send_multipart(get.encode())
        poller = zmq.Poller()
        poller.register(s, zmq.POLLIN)
        if link is not None and link.sock is not None:
            poller.register(link.sock, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            wait = left if still_holder is None else min(left, _HOLDER_RECHECK)
            ready = dict(poller.poll(max(1, int(wait * 1000))))
            if not ready:
                if time.monotonic() < deadline and still_holder is not None and still_holder():
                    continue
                self._drop_thread_socket(address)
                raise TimeoutError(f"worker {address} did not answer")
            if s in ready:
                frames = [f.buffer for f in s.recv_multipart(copy=False)]
            else:
                frames = self._open_sealed(link, address)
                if frames is None:
                    continue
            try:
                msg = protocol.parse_data(frames)
            except protocol.ProtocolError as e:
                self._drop_thread_socket(address)
                raise FriskyError(f"a malformed reply from worker {address}: {e.why}") from None
            if msg.req != req:
                continue  # a late answer to an earlier, abandoned request
            if type(msg) is protocol.Bulk:
                if link is None:
                    raise FriskyError(f"worker {address} pointed to a bulk socket this client did not ask for")
                new = link.attach(s.context, msg.port, req)
                if new is not None:
                    with self._lock:
                        self._thread_sockets.append(new)
                    poller.register(new, zmq.POLLIN)
                continue
            if any(d[0] == protocol.STREAMED for descs in msg.descs for d in descs):
                raise FriskyError(f"worker {address} streamed a reply this client did not ask to stream")
            try:
                out = dataplane.decode_values(msg.keys, msg.descs, msg.frames)
            except Exception as e:  # noqa: BLE001 - a bad pickle, segment or codec: this fetch fails
                raise FriskyError(f"cannot decode the reply of worker {address}: {e!r}") from e
            recorder.span("client.gather", t0)
            return out

    def _bulk_link(self, address: str) -> bulk.BulkLink:
        links = self._per_thread("links")
        link = links.get(address)
        if link is None:
            link = links[address] = bulk.BulkLink(address, config.get("max_message_size"))
        return link

    def _open_sealed(self, link: bulk.BulkLink, address: str) -> list | None:
        """The next whole message on ``link``'s bulk connection, or None while parts are to come.

        A part that fails to open is never accepted: the link is dropped (the next fetch
        makes a new one) and this fetch fails with the reason (:class:`_Refused`)."""
        part = link.sock.recv(copy=False)
        try:
            opened = link.feed(part.buffer)
        except seal.SealError as e:
            self._dropped(f"worker {address}", "sealed", f"refused: {e}")
            self._local.links.pop(address, None)
            link.close()
            raise _Refused(str(e)) from None
        return None if opened is None else opened[1]

    def _drop_thread_socket(self, address: str) -> None:
        socks = getattr(self._local, "socks", {})
        s = socks.pop(address, None)
        if s is not None:
            s.close(0)

    def _query(self, op: str, *fields) -> Any:
        """A request answered by the scheduler, on this thread's own socket."""
        s = self._thread_socket(self.scheduler_address)
        req = next(self._counter)
        s.send_multipart([protocol.header(op, req, *fields)])
        deadline = time.monotonic() + self.timeout
        while True:
            if not s.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                self._drop_thread_socket(self.scheduler_address)
                raise TimeoutError(f"the scheduler at {self.scheduler_address} did not answer")
            try:
                msg = protocol.parse_to_client(s.recv_multipart())
            except protocol.ProtocolError as e:
                raise FriskyError(f"a malformed answer from the scheduler: {e.why}") from None
            if type(msg) is protocol.Reply and msg.req == req:
                return msg.value


_NOT_VIEWED = object()


def _viewed(remote: Remote) -> Any:
    """The value a holder's same-host reference names, viewed in place with no request; the
    reference is used once (stale or unusable: the holder is asked instead)."""
    ref, remote.ref = remote.ref, None
    try:
        return dataplane.from_reference(ref)
    except Exception as e:  # noqa: BLE001 - freed and reused, another host's arena, malformed
        log.debug("reference to a result on %s not viewed: %s", remote.address, e)
        return _NOT_VIEWED
