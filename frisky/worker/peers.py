"""The worker's data plane: a ROUTER that serves held values to peers and clients, and
DEALERs that fetch dependencies from other workers (on the worker's loop thread)."""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING

import zmq

from frisky import config, protocol
from frisky.data import compression, dataplane
from frisky.telemetry import now, recorder
from frisky.zmq import sockets

if TYPE_CHECKING:
    from frisky.worker.server import Worker

log = logging.getLogger("frisky.worker")

MAX_REQUEST = 64 << 20  # largest ``get`` request the data socket takes


class Peers:
    """Serves held values to peers (:meth:`serve`) and fetches dependencies from them
    (:meth:`fetch`, then :meth:`read` for each answer)."""

    def __init__(self, worker: Worker, listen_address: str) -> None:
        self.worker = worker
        # it receives only ``get`` requests: a small cap
        cap = min(config.get("max_message_size"), MAX_REQUEST)
        self.sock, self.address = sockets.router(worker.ctx, listen_address, max_message_size=cap,
                                                 keys=worker.keys)
        self.dealers: dict[str, zmq.Socket] = {}
        self.peer_of_sock: dict[zmq.Socket, str] = {}
        self.incoming: dict[zmq.Socket, tuple] = {}  # peer socket -> (streamed reply, start)
        self._reqs = itertools.count(1)
        self.poller: zmq.Poller | None = None  # the worker loop's, once it runs
        self.prefer = compression.preference()  # codec for peers on other hosts (None: raw)

    def close(self) -> None:
        for s in [self.sock, *self.dealers.values()]:
            s.close(0)

    def serve(self) -> None:
        """Answer the ``get`` requests waiting on the data socket."""
        for _ in range(1000):
            frames = sockets.recv(self.sock)
            if frames is None:
                return
            ident = frames[0]
            try:
                msg = protocol.parse_get(frames[1:])
            except protocol.ProtocolError as e:
                self.worker.dropped(f"peer {ident.hex()[:16]}", e.op, e.why)
                continue
            try:
                self._answer(ident, msg)
            except Exception as e:  # noqa: BLE001 - our bug: the worker keeps serving
                self.worker.dropped(f"peer {ident.hex()[:16]}", protocol.GET, f"{type(e).__name__}: {e}",
                                    exc_info=e)

    def _answer(self, ident: bytes, msg: protocol.Get) -> None:
        """Send the values ``msg`` asks for that this worker holds."""
        t0 = now()
        keys, same_host = msg.keys, msg.same_host
        prefer = None if same_host else self.prefer
        # peers that can take it (workers; not clients) get large buffers streamed
        streams = [] if prefer and msg.stream else None
        found, descs_all, missing, out = [], [], [], []
        for k in keys:
            frames = self.worker.shared.get(k)
            if frames is None:
                if k in self.worker.store:
                    frames = dataplane.dumps(self.worker.store.get(k))
                elif k in self.worker.fetched:
                    frames = dataplane.dumps(self.worker.fetched.get(k))
                elif self.worker.memory.has(k):  # served from disk, not loaded back into the store
                    frames = self._spilled_frames(k)
                if frames is None:
                    missing.append(k)
                    continue
            descs, value_frames = dataplane.encode(frames, same_host, prefer, streams)
            found.append(k)
            descs_all.append(descs)
            out.extend(value_frames)
        try:
            self.sock.send_multipart(
                [ident, protocol.header(protocol.DATA, msg.req, found, descs_all, missing), *out], copy=False
            )
            if streams:
                self._stream(ident, streams)
        except zmq.ZMQError as e:  # the asker is gone (its socket closed): nobody to answer
            log.debug("worker %s: reply to a peer dropped: %s", self.worker.name, e)
        recorder.span("worker.transfer.send", t0)

    def _spilled_frames(self, key: str) -> list | None:
        """A spilled value's frames for a peer, mapped from disk; None if they cannot be read."""
        try:
            return self.worker.memory.frames(key)
        except (OSError, KeyError) as e:  # corrupt (SpillError), gone or unmappable: reported missing
            log.warning("worker %s: cannot serve spilled %r: %s", self.worker.name, key, e)
            return None

    def _stream(self, ident: bytes, streams: list) -> None:
        """Send the chunks that follow a reply, each as soon as it is compressed."""
        sock = self.sock
        for payload in dataplane.chunks(streams):
            # without copying: ZeroMQ's I/O thread sends this chunk while we compress the next
            sockets.send(sock, [ident, payload], copy=False)

    def fetch(self, address: str, keys: list[str]) -> None:
        sock = self.dealers.get(address)
        if sock is None:
            try:
                sock = sockets.dealer(sockets.context_for(address) if address.startswith("inproc://") else self.worker.ctx,
                                      address, keys=self.worker.keys)
            except OSError:
                self.worker.peer_lost(address)
                return
            self.dealers[address] = sock
            self.peer_of_sock[sock] = address
            self.poller.register(sock, zmq.POLLIN)
        sock.send_multipart([protocol.header(protocol.GET, next(self._reqs), keys, _same_host(address), True)])

    def read(self, sock: zmq.Socket) -> None:
        address = self.peer_of_sock.get(sock)
        while True:
            frames = sockets.recv(sock, copy=False)
            if frames is None:
                return
            incoming = self.incoming.get(sock)
            if incoming is not None:  # the next chunk of a streamed reply
                values, missing = self._chunk(sock, incoming, frames)
                if values is None:
                    continue
            else:
                t0 = now()
                try:
                    msg = protocol.parse_data([f.buffer for f in frames])
                except protocol.ProtocolError as e:  # what we asked of this peer is lost
                    self.worker.dropped(f"peer {address}", e.op, e.why)
                    self.worker.peer_lost(address)
                    continue
                values, missing = self._decode(msg, sock, t0, address)
                if values is None:
                    continue
                recorder.span("worker.transfer.recv", t0)
            self.worker.received(values, missing, address)

    def _decode(self, msg: protocol.Data, sock: zmq.Socket, t0: int, address: str) -> tuple[dict | None, list]:
        """The values of a ``data`` reply (None while its streamed chunks are still to come);
        one that cannot be decoded leaves its keys missing."""
        try:
            if dataplane.streamed(msg.descs):
                reply = dataplane.Incoming(msg.keys, msg.descs, msg.frames)
                if reply.remaining > 0:
                    self.incoming[sock] = (reply, t0)
                    return None, []
                return reply.values(), msg.missing
            return dataplane.decode_values(msg.keys, msg.descs, msg.frames), msg.missing
        except Exception as e:  # noqa: BLE001 - a bad pickle, segment or codec: those keys are missing
            self.worker.dropped(f"peer {address}", protocol.DATA, f"cannot decode: {type(e).__name__}: {e}")
            return {}, msg.missing + msg.keys

    def _chunk(self, sock: zmq.Socket, incoming: tuple, frames: list) -> tuple[dict | None, list]:
        """Place one streamed chunk; the reply's values once it is complete."""
        reply, t0 = incoming
        try:
            if not reply.feed(frames[-1].buffer):
                return None, []
            values, missing = reply.values(), []
        except Exception as e:  # noqa: BLE001 - a corrupt stream: its keys are missing, the tasks learn why
            self.worker.dropped("a peer", "chunk", f"corrupt transfer: {type(e).__name__}: {e}")
            values, missing = {}, list(reply.keys)
        del self.incoming[sock]
        recorder.span("worker.transfer.recv", t0)
        return values, missing



def _same_host(address: str) -> bool:
    """Whether a peer at ``address`` shares this host's /dev/shm (ipc and inproc do)."""
    return not address.startswith("tcp://")

