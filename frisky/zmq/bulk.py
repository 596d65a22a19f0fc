"""The bulk connection: values between hosts, sealed with AES-256-GCM on plain ZeroMQ.

libzmq's CURVE copies and zero-fills each frame several times and moves values at a
fraction of the wire's speed, so a secure cluster asks for data over CURVE (``get``, whose
``bulk`` field carries the link's ident and secret) and takes the answer on a second,
plain connection where every frame is sealed by :mod:`frisky.data.seal`.

Server side (:class:`BulkServer`, one per worker): a ROUTER bound next to the worker's
CURVE data socket. A link is made by the first CURVE ``get`` that names its ident, and
bound to that secret; a ``get`` whose ident has not attached yet is parked and answered
``bulk [req, port]`` over CURVE; the requester connects a DEALER whose routing id is
the ident and sends a sealed ``attach``; the parked gets are answered then. Anything else
arriving on this socket is dropped and counted: it carries no requests, only attaches,
and an attach must open under the link's secret.

Requester side (:class:`BulkLink`, one per peer and requesting socket): the ident, the
secret, the DEALER once the server named its port, and the :class:`~frisky.data.seal.Opener`
that reassembles the sealed answers.
"""

from __future__ import annotations

from collections import OrderedDict

import zmq

from frisky import logs
from frisky.data import seal
from frisky.telemetry import now, recorder
from frisky.zmq import zap

log = logs.logger("zmq")

MAX_LINKS = 4096  # idents a server remembers (least recently used go first)
MAX_PARKED = 10_000  # gets waiting for one link to attach
ATTACH = b"attach"


class Link:
    """The server's side of one link."""

    __slots__ = ("secret", "sealer", "opener", "attached", "parked")

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.sealer = seal.Sealer(secret)
        self.opener = seal.Opener(secret, attach=True, max_frame=len(ATTACH))
        self.attached = False
        self.parked: list = []  # gets to answer once attached


class BulkServer:
    """A worker's plain ROUTER for sealed answers (see the module docstring)."""

    def __init__(self, ctx: zmq.Context, host: str) -> None:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, 1024)  # it receives attaches only
        zap.protect(sock, zap.BULK_DOMAIN)  # ZMTP 3 only; NULL peers (the seal authenticates)
        try:
            sock.bind(f"tcp://{host}:*")
        except zmq.ZMQError as e:
            sock.close(0)
            raise OSError(f"cannot bind a bulk socket on {host}: {e}") from e
        self.sock = sock
        self.port = int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rpartition(":")[2])
        self.links: OrderedDict[bytes, Link] = OrderedDict()
        self.dropped = logs.Dropped(log, "bulk message")

    def close(self) -> None:
        self.sock.close(0)

    def link(self, ident: bytes, secret: bytes) -> Link | None:
        """The link ``ident`` names (made now if new); None if it is bound to another secret."""
        link = self.links.get(ident)
        if link is None:
            link = self.links[ident] = Link(secret)
            if len(self.links) > MAX_LINKS:
                self.links.popitem(last=False)
        elif link.secret != secret:
            return None
        else:
            self.links.move_to_end(ident)
        return link

    def relink(self, ident: bytes) -> Link:
        """Remake the server's side of ``ident``'s link (its connection went away mid-way: the
        requester's opener expects a sequence that cannot continue, so it starts anew under
        a fresh salt). What was parked stays parked."""
        old = self.links[ident]
        link = self.links[ident] = Link(old.secret)
        link.parked = old.parked
        return link

    def park(self, link: Link, item) -> bool:
        """Keep ``item`` until ``link`` attaches; True if it is the first one waiting."""
        link.parked.append(item)
        if len(link.parked) > MAX_PARKED:
            del link.parked[0]
        return len(link.parked) == 1

    def send(self, ident: bytes, link: Link, xfer: int, frames: list) -> None:
        """Seal message ``frames`` of transfer ``xfer`` and send it to ``ident``, part by part.

        Raises ``zmq.ZMQError`` (EHOSTUNREACH) when the requester is not connected."""
        send = self.sock.send
        t0, parts = now(), 0
        for part in link.sealer.seal(xfer, frames):
            send(ident, zmq.SNDMORE)
            # without copying: ZeroMQ's I/O thread sends this part while the next is sealed
            send(part, 0, copy=False)
            parts += 1
        recorder.add("tcp.send.seal", parts, now() - t0)

    def read(self) -> list[tuple[bytes, Link]]:
        """Take the attaches waiting; returns the links that attached."""
        out = []
        for _ in range(1000):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            ident = frames[0]
            link = self.links.get(ident)
            if link is None or len(frames) != 2:
                self.dropped(f"bulk peer {ident.hex()[:16]}", "attach", "not a known link's attach")
                continue
            try:
                opened = link.opener.feed(frames[1])
            except seal.SealError as e:
                self.dropped(f"bulk peer {ident.hex()[:16]}", "attach", str(e))
                continue
            if opened is None or len(opened[1]) != 1 or bytes(opened[1][0]) != ATTACH:
                self.dropped(f"bulk peer {ident.hex()[:16]}", "attach", "not an attach")
                continue
            link.attached = True
            out.append((ident, link))
        return out


class BulkLink:
    """A requester's side of one link to the worker at ``address`` (tcp)."""

    def __init__(self, address: str, max_frame: int = 1 << 30) -> None:
        self.address = address
        self.ident = seal.new_ident()
        self.secret = seal.new_secret()
        self.sock: zmq.Socket | None = None
        self.port: int | None = None
        self.opener = seal.Opener(self.secret, max_frame=max_frame)
        self._attach = seal.Sealer(self.secret, attach=True)

    @property
    def field(self) -> list:
        """The ``bulk`` field of a ``get`` on this link."""
        return [self.ident, self.secret]

    def attach(self, ctx: zmq.Context, port: int, req: int) -> zmq.Socket | None:
        """Connect to the server's bulk ``port`` (if not yet there) and send a sealed attach;
        returns the socket when it is new."""
        new = None
        if self.sock is not None and port != self.port:
            self.sock.close(0)
            self.sock = None
        if self.sock is None:
            host = self.address[len("tcp://"):].rpartition(":")[0]
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.setsockopt(zmq.IDENTITY, self.ident)
            sock.setsockopt(zmq.RECONNECT_IVL, 2)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            sock.connect(f"tcp://{host}:{port}")
            self.sock = new = sock
            self.port = port
        for part in self._attach.seal(req, [ATTACH]):
            self.sock.send(part)
        return new

    def feed(self, part) -> tuple[int, list] | None:
        """Open one sealed part; ``(xfer, frames)`` once a message is whole. SealError if not."""
        return self.opener.feed(part)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
