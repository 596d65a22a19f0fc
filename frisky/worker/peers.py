"""The worker's data plane: a ROUTER that serves held values to peers and clients, and
DEALERs that fetch dependencies from other workers (on the worker's loop thread)."""

from __future__ import annotations

import itertools
import sys
from typing import TYPE_CHECKING

import zmq

from frisky import config, protocol
from frisky.data import dataplane
from frisky.protocol import unpack
from frisky.telemetry import now, recorder
from frisky.zmq import sockets

if TYPE_CHECKING:
    from frisky.worker.server import Worker


class Peers:
    """Serves held values to peers (:meth:`serve`) and fetches dependencies from them
    (:meth:`fetch`, then :meth:`read` for each answer)."""

    def __init__(self, worker: Worker, listen_address: str) -> None:
        self.worker = worker
        self.sock, self.address = sockets.router(worker.ctx, listen_address, keys=worker.keys)
        self.dealers: dict[str, zmq.Socket] = {}
        self.peer_of_sock: dict[zmq.Socket, str] = {}
        self.incoming: dict[zmq.Socket, tuple] = {}  # peer socket -> (streamed reply, start)
        self._reqs = itertools.count(1)
        self.poller: zmq.Poller | None = None  # the worker loop's, once it runs

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
            msg = unpack(frames[1])
            if msg[0] != protocol.GET:
                continue
            t0 = now()
            req, keys, same_host = msg[1], msg[2], msg[3]
            compress = not same_host and config.get("compression") != "none"
            # peers that can take it (workers; not clients) get large buffers streamed
            streams = [] if compress and len(msg) > 4 and msg[4] else None
            found, descs_all, missing, out = [], [], [], []
            for k in keys:
                frames = self.worker.shared.get(k)
                if frames is None:
                    if k in self.worker.store:
                        frames = dataplane.dumps(self.worker.store.get(k))
                    elif k in self.worker.state.fetched:
                        frames = dataplane.dumps(self.worker.state.fetched[k])
                    elif self.worker.memory.has(k):  # served from disk, not loaded back into the store
                        frames = self._spilled_frames(k)
                    if frames is None:
                        missing.append(k)
                        continue
                descs, value_frames = dataplane.encode(frames, same_host, compress, streams)
                found.append(k)
                descs_all.append(descs)
                out.extend(value_frames)
            try:
                self.sock.send_multipart(
                    [ident, protocol.header(protocol.DATA, req, found, descs_all, missing), *out], copy=False
                )
                if streams:
                    self._stream(ident, streams)
            except zmq.ZMQError:
                pass
            recorder.span("worker.transfer.send", t0)

    def _spilled_frames(self, key: str) -> list | None:
        """A spilled value's frames for a peer, mapped from disk; None if they cannot be read."""
        try:
            return self.worker.memory.frames(key)
        except (OSError, KeyError) as e:  # corrupt (SpillError), gone or unmappable: reported missing
            print(f"frisky worker {self.worker.name}: cannot serve spilled {key!r}: {e}", file=sys.stderr)
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
                for tid, miss in self.worker.state.peer_lost(address):
                    self.worker._send(protocol.header(protocol.MISSING, tid, miss))
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
                _, _req, keys, descs_all, missing = unpack(frames[0].buffer)
                bufs = [f.buffer for f in frames[1:]]
                if dataplane.streamed(descs_all):
                    reply = dataplane.Incoming(keys, descs_all, bufs)
                    if reply.remaining > 0:
                        self.incoming[sock] = (reply, t0)
                        continue
                    values = reply.values()
                else:
                    values = dataplane.decode_values(keys, descs_all, bufs)
                recorder.span("worker.transfer.recv", t0)
            ready, report = self.worker.state.got(values, missing, address)
            if ready:
                self.worker.executor.submit(ready)
            for tid, miss in report:
                self.worker._send(protocol.header(protocol.MISSING, tid, miss))
            for peer, more in self.worker.state.more_fetches().items():
                self.fetch(peer, more)

    def _chunk(self, sock: zmq.Socket, incoming: tuple, frames: list) -> tuple[dict | None, list]:
        """Place one streamed chunk; the reply's values once it is complete."""
        reply, t0 = incoming
        try:
            if not reply.feed(frames[-1].buffer):
                return None, []
            values, missing = reply.values(), []
        except ValueError as e:  # a corrupt stream: its keys are missing, the tasks learn why
            print(f"frisky worker {self.worker.name}: dropped a corrupt transfer: {e}", file=sys.stderr)
            values, missing = {}, list(reply.keys)
        del self.incoming[sock]
        recorder.span("worker.transfer.recv", t0)
        return values, missing



def _same_host(address: str) -> bool:
    """Whether a peer at ``address`` shares this host's /dev/shm (ipc and inproc do)."""
    return not address.startswith("tcp://")

