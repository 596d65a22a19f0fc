"""The worker's data plane: a ROUTER that serves held values to peers and clients, and
DEALERs that fetch dependencies from other workers (on the worker's loop thread).

With keys, requests travel over CURVE and the answers to peers on other hosts come back
sealed with AES-256-GCM on a plain bulk connection (:mod:`frisky.zmq.bulk`)."""

from __future__ import annotations

import collections
import itertools
import logging
import time
from typing import TYPE_CHECKING

import zmq

from frisky import config, protocol
from frisky.data import compression, dataplane, seal
from frisky.telemetry import now, recorder
from frisky.zmq import bulk, sockets

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
        self._poller: zmq.Poller | None = None  # the worker loop's, once it runs
        self.prefer = compression.preference()  # codec for peers on other hosts (None: raw)
        # sealed answers to peers on other hosts (secure TCP only), and our links to theirs
        self.bulk: bulk.BulkServer | None = None
        if worker.keys is not None and self.address.startswith("tcp://"):
            self.bulk = bulk.BulkServer(worker.ctx, self.address[len("tcp://"):].rpartition(":")[0])
        self.links: dict[str, bulk.BulkLink] = {}  # peer address -> our link to its bulk socket
        self.link_of_sock: dict[zmq.Socket, bulk.BulkLink] = {}
        # telemetry: fetches in flight (req -> [keys, address, start wall time, bytes so far])
        # and the last ones finished ([key, from, nkeys, bytes, seconds])
        self.flying: dict[int, list] = {}
        self.finished: collections.deque = collections.deque(maxlen=200)
        self.sent_bytes = 0
        self.recv_bytes = 0

    @property
    def poller(self) -> zmq.Poller | None:
        return self._poller

    @poller.setter
    def poller(self, poller: zmq.Poller) -> None:
        self._poller = poller
        if self.bulk is not None:  # its attaches come in through read()
            poller.register(self.bulk.sock, zmq.POLLIN)

    def close(self) -> None:
        for s in [self.sock, *self.dealers.values()]:
            s.close(0)
        for link in self.links.values():
            link.close()
        if self.bulk is not None:
            self.bulk.close()

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
            via = None
            if msg.bulk is not None and self.bulk is not None:
                via = self.bulk.link(*msg.bulk)
                if via is None:
                    self.worker.dropped(f"peer {ident.hex()[:16]}", protocol.GET, "bulk ident bound to another secret")
                    continue
                if not via.attached:  # first, the asker connects to the bulk socket
                    self._park(ident, msg, via)
                    continue
            self._answer_safely(ident, msg, via)

    def _answer_safely(self, ident: bytes, msg: protocol.Get, via: bulk.Link | None) -> None:
        try:
            self._answer(ident, msg, via)
        except Exception as e:  # noqa: BLE001 - our bug: the worker keeps serving
            self.worker.dropped(f"peer {ident.hex()[:16]}", protocol.GET, f"{type(e).__name__}: {e}",
                                exc_info=e)

    def _park(self, ident: bytes, msg: protocol.Get, via: bulk.Link) -> None:
        """Hold a bulk get until its link attaches, and tell the asker where to attach."""
        self.bulk.park(via, (ident, msg))
        try:
            sockets.send(self.sock, [ident, *protocol.Bulk(msg.req, self.bulk.port).encode()])
        except zmq.ZMQError as e:  # the asker is gone: its parked get goes with its link
            log.debug("worker %s: bulk pointer to a peer dropped: %s", self.worker.name, e)

    def _attached(self) -> None:
        """Links that just attached to the bulk socket: answer what they asked meanwhile."""
        for _, link in self.bulk.read():
            parked, link.parked = link.parked, []
            for ident, msg in parked:
                self._answer_safely(ident, msg, link)

    def _answer(self, ident: bytes, msg: protocol.Get, via: bulk.Link | None = None) -> None:
        """Send the values ``msg`` asks for that this worker holds (sealed on ``via``'s bulk
        connection when given)."""
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
        head = protocol.header(protocol.DATA, msg.req, found, descs_all, missing)
        if via is not None:
            self._answer_sealed(ident, msg, via, [head, *out], streams)
            recorder.span("worker.transfer.send", t0)
            return
        sent = sum(map(_nbytes, out))
        try:
            self.sock.send_multipart([ident, head, *out], copy=False)
            if streams:
                sent += self._stream(ident, streams)
        except zmq.ZMQError as e:  # the asker is gone (its socket closed): nobody to answer
            log.debug("worker %s: reply to a peer dropped: %s", self.worker.name, e)
        self.sent_bytes += sent
        recorder.span("worker.transfer.send", t0, found[0].partition("-")[0] if found else "", None, sent)

    def _answer_sealed(self, ident: bytes, msg: protocol.Get, via: bulk.Link, reply: list, streams) -> None:
        bident = msg.bulk[0]
        try:
            self.bulk.send(bident, via, msg.req, reply)
        except zmq.ZMQError as e:  # its bulk connection is gone (nothing of the reply left): attach again
            log.debug("worker %s: bulk connection of a peer gone: %s", self.worker.name, e)
            self._park(ident, msg, self.bulk.relink(bident))
            return
        try:
            for payload in dataplane.chunks(streams or ()):
                self.bulk.send(bident, via, msg.req, [payload])
        except zmq.ZMQError as e:  # gone mid-reply: the asker's link fails and it asks again
            self.bulk.relink(bident)
            log.debug("worker %s: bulk reply to a peer cut: %s", self.worker.name, e)

    def _spilled_frames(self, key: str) -> list | None:
        """A spilled value's frames for a peer, mapped from disk; None if they cannot be read."""
        try:
            return self.worker.memory.frames(key)
        except (OSError, KeyError) as e:  # corrupt (SpillError), gone or unmappable: reported missing
            log.warning("worker %s: cannot serve spilled %r: %s", self.worker.name, key, e)
            return None

    def _stream(self, ident: bytes, streams: list) -> int:
        """Send the chunks that follow a reply, each as soon as it is compressed; returns their bytes."""
        sock = self.sock
        sent = 0
        for payload in dataplane.chunks(streams):
            # without copying: ZeroMQ's I/O thread sends this chunk while we compress the next
            sockets.send(sock, [ident, payload], copy=False)
            sent += _nbytes(payload)
        return sent

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
        via = None
        if self.worker.keys is not None and address.startswith("tcp://"):
            via = self.links.get(address)
            if via is None:
                via = self.links[address] = bulk.BulkLink(address, config.get("max_message_size"))
            via = via.field
        req = next(self._reqs)
        self.flying[req] = [keys, address, time.time(), 0]
        sock.send_multipart(protocol.Get(req, keys, _same_host(address), via is None, via).encode())

    def read(self, sock: zmq.Socket) -> None:
        if self.bulk is not None and sock is self.bulk.sock:
            self._attached()
            return
        link = self.link_of_sock.get(sock)
        if link is not None:
            self._read_sealed(sock, link)
            return
        address = self.peer_of_sock.get(sock)
        while True:
            frames = sockets.recv(sock, copy=False)
            if frames is None:
                return
            self._on_message(sock, address, [f.buffer for f in frames])

    def _read_sealed(self, sock: zmq.Socket, link: bulk.BulkLink) -> None:
        """Open the sealed parts waiting on a bulk connection; a part that fails drops the link."""
        address = link.address
        parts, busy = 0, 0
        try:
            while True:
                frames = sockets.recv(sock, copy=False)
                if frames is None:
                    return
                t0 = now()
                try:
                    opened = link.feed(frames[-1].buffer)
                except seal.SealError as e:  # never accepted: everything asked on this link is fetched again
                    self.worker.dropped(f"peer {address}", "sealed", f"refused: {e}")
                    recorder.count("tcp.recv.refused")
                    self._drop_link(link)
                    self.worker.peer_lost(address)
                    return
                parts += 1
                busy += now() - t0
                if opened is not None:
                    self._on_message(sock, address, opened[1])
        finally:
            if parts:
                recorder.add("tcp.recv.open", parts, busy)

    def _drop_link(self, link: bulk.BulkLink) -> None:
        if self.links.get(link.address) is link:
            del self.links[link.address]
        if link.sock is not None:
            self.poller.unregister(link.sock)
            self.link_of_sock.pop(link.sock, None)
            self.incoming.pop(link.sock, None)
        link.close()

    def _bulk_pointer(self, address: str, msg: protocol.Bulk) -> None:
        """A peer asks us to attach to its bulk socket before it answers."""
        link = self.links.get(address)
        if link is None:  # dropped since (a refused part): what it asked is asked again anew
            return
        try:
            new = link.attach(self.worker.ctx, msg.port, msg.req)
        except zmq.ZMQError as e:
            self.worker.dropped(f"peer {address}", protocol.BULK, f"cannot attach: {e}")
            self._drop_link(link)
            self.worker.peer_lost(address)
            return
        if new is not None:
            self.link_of_sock[new] = link
            self.poller.register(new, zmq.POLLIN)

    def _on_message(self, sock: zmq.Socket, address: str, frames: list) -> None:
        """One whole message from a peer (a reply, a chunk of one, or a bulk pointer)."""
        got = sum(map(_nbytes, frames))
        self.recv_bytes += got
        incoming = self.incoming.get(sock)
        if incoming is not None:  # the next chunk of a streamed reply
            entry = self.flying.get(incoming[2])
            if entry is not None:
                entry[3] += got
            values, missing = self._chunk(sock, incoming, frames)
            if values is None:
                return
        else:
            t0 = now()
            try:
                msg = protocol.parse_data(frames)
            except protocol.ProtocolError as e:  # what we asked of this peer is lost
                self.worker.dropped(f"peer {address}", e.op, e.why)
                self.worker.peer_lost(address)
                return
            if type(msg) is protocol.Bulk:
                self._bulk_pointer(address, msg)
                return
            entry = self.flying.get(msg.req)
            if entry is not None:
                entry[3] += got
            values, missing = self._decode(msg, sock, t0, address)
            if values is None:
                return
            self._done(msg.req, t0)
        self.worker.received(values, missing, address)

    def _decode(self, msg: protocol.Data, sock: zmq.Socket, t0: int, address: str) -> tuple[dict | None, list]:
        """The values of a ``data`` reply (None while its streamed chunks are still to come);
        one that cannot be decoded leaves its keys missing."""
        try:
            if dataplane.streamed(msg.descs):
                reply = dataplane.Incoming(msg.keys, msg.descs, msg.frames)
                if reply.remaining > 0:
                    self.incoming[sock] = (reply, t0, msg.req)
                    return None, []
                return reply.values(), msg.missing
            return dataplane.decode_values(msg.keys, msg.descs, msg.frames), msg.missing
        except Exception as e:  # noqa: BLE001 - a bad pickle, segment or codec: those keys are missing
            self.worker.dropped(f"peer {address}", protocol.DATA, f"cannot decode: {type(e).__name__}: {e}")
            return {}, msg.missing + msg.keys

    def _chunk(self, sock: zmq.Socket, incoming: tuple, frames: list) -> tuple[dict | None, list]:
        """Place one streamed chunk; the reply's values once it is complete."""
        reply, t0, req = incoming
        try:
            if not reply.feed(frames[-1]):
                return None, []
            values, missing = reply.values(), []
        except Exception as e:  # noqa: BLE001 - a corrupt stream: its keys are missing, the tasks learn why
            self.worker.dropped("a peer", "chunk", f"corrupt transfer: {type(e).__name__}: {e}")
            values, missing = {}, list(reply.keys)
        del self.incoming[sock]
        self._done(req, t0)
        return values, missing

    def _done(self, req: int, t0: int) -> None:
        """A fetch's reply is complete: record its span and keep it for the next heartbeat."""
        entry = self.flying.pop(req, None)
        keys = entry[0] if entry is not None else ()
        sizes = self.worker.state.sizes  # what the values hold (through shared memory, more than the wire carried)
        nbytes = max(entry[3] if entry is not None else 0, sum(sizes.get(k, 0) for k in keys))
        recorder.span("worker.transfer.recv", t0, keys[0].partition("-")[0] if keys else "", None, nbytes)
        if entry is not None:
            self.finished.append([keys[0] if keys else "", entry[1], len(keys), nbytes, time.time() - entry[2]])

    def telemetry(self) -> dict:
        """Transfers for the heartbeat: in flight now, finished since the last call; byte totals."""
        finished = list(self.finished)
        self.finished.clear()
        stale = time.time() - 600  # a reply that never came (its peer lost): the state machine moved on
        for req in [r for r, e in self.flying.items() if e[2] < stale]:
            del self.flying[req]
        flying = [[e[0][0] if e[0] else "", e[1], len(e[0]), e[3], e[2]] for e in list(self.flying.values())[:100]]
        return {"in_flight": flying, "finished": finished, "recv_bytes": self.recv_bytes, "sent_bytes": self.sent_bytes}



def _nbytes(buf) -> int:
    """Bytes of a frame (bytes, a buffer, a zmq.Frame)."""
    try:
        return memoryview(buf).nbytes
    except TypeError:
        return len(buf)


def _same_host(address: str) -> bool:
    """Whether a peer at ``address`` shares this host's /dev/shm (ipc and inproc do)."""
    return not address.startswith("tcp://")

