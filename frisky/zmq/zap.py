"""A ZAP handler per ZeroMQ context: who may complete a handshake with our listening sockets.

A socket with a ZAP domain asks the handler bound at ``inproc://zeromq.zap.01`` in its
context about every peer, and — the reason it is on today — libzmq then refuses ZMTP
1.0 and 2.0 peers outright (``zmtp_engine``: "reject ZMTP 1.0 connections if ZAP is
enabled"). Without it, seven bytes of plain TCP (``01 00 04 00 61 62 63``) pass for a
ZMTP 1.0 greeting and their payload reaches Python as a message.

The handler accepts every NULL-mechanism peer; :func:`set_policy` is where an
authenticating policy (CURVE keys) plugs in.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import zmq

from frisky import logs

ENDPOINT = "inproc://zeromq.zap.01"
DOMAIN = "frisky"
BULK_DOMAIN = "frisky-bulk"  # a worker's plain bulk socket: NULL peers, every frame sealed

log = logs.logger("zmq")
_lock = threading.Lock()
_handlers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # context -> thread

# (domain, address, mechanism, credentials) -> None to accept, (None, user id) to accept and
# name the peer (read back as the messages' "User-Id" property), or the reason to refuse
Policy = Callable[[str, str, str, list], "str | tuple | None"]


def _accept_all(domain: str, address: str, mechanism: str, credentials: list) -> str | None:
    return None


_policy: Policy = _accept_all


def set_policy(policy: Policy | None) -> None:
    """Decide who may connect (None: everyone who speaks ZMTP 3)."""
    global _policy
    _policy = policy or _accept_all


def protect(sock: zmq.Socket, domain: str = DOMAIN) -> None:
    """Have ``sock`` (a listening socket) authenticate its peers through this context's handler."""
    ensure_handler(sock.context)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())


def ensure_handler(ctx: zmq.Context) -> None:
    """Start the handler thread of ``ctx`` if it has none (one per context)."""
    with _lock:
        if ctx in _handlers:
            return
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(ENDPOINT)
        except zmq.ZMQError as e:  # someone else's handler already serves this context
            sock.close(0)
            if e.errno != zmq.EADDRINUSE:
                raise
            _handlers[ctx] = None
            return
        t = threading.Thread(target=_serve, args=(sock,), name="frisky-zap", daemon=True)
        _handlers[ctx] = t
        t.start()


def _serve(sock: zmq.Socket) -> None:
    try:
        while True:
            frames = sock.recv_multipart()
            reply = _answer(frames[2:]) if len(frames) > 2 else None
            if reply is not None:
                sock.send_multipart(frames[:2] + reply)
    except zmq.ContextTerminated:  # the context is closing: let it
        pass
    finally:
        sock.close(0)


def _answer(request: list) -> list | None:
    """A ZAP reply (RFC 27) for ``request``: [version, id, domain, address, identity, mechanism, *creds]."""
    if len(request) < 6 or request[0] != b"1.0":
        return None
    request_id = request[1]
    try:
        domain, address, mechanism = (f.decode(errors="replace") for f in (request[2], request[3], request[5]))
        why = _policy(domain, address, mechanism, request[6:])
    except Exception as e:  # noqa: BLE001 - a broken policy refuses, it does not stop the handler
        log.warning("ZAP policy failed: %r", e)
        why = "policy error"
    if isinstance(why, tuple):  # (None, user id): accepted, and the peer's role is named
        return [b"1.0", request_id, b"200", b"OK", str(why[1]).encode(), b""]
    if why is None:
        return [b"1.0", request_id, b"200", b"OK", b"", b""]
    return [b"1.0", request_id, b"400", why.encode()[:200], b"", b""]
