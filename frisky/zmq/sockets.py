"""Sockets with Frisky's options, addresses, and a cross-thread wake-up."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

import zmq
from zmq.backend import Socket as _CSocket

from frisky import config
from frisky.zmq import curve, zap

_inproc_contexts: dict[str, zmq.Context] = {}
_lock = threading.Lock()


def context_for(address: str) -> zmq.Context:
    """The context to use for ``address``: inproc needs the one its server bound with."""
    if address.startswith("inproc://"):
        ctx = _inproc_contexts.get(address)
        if ctx is None:
            raise OSError(f"no in-process scheduler at {address}")
        return ctx
    return zmq.Context.instance()


def register_inproc(address: str, ctx: zmq.Context) -> None:
    with _lock:
        _inproc_contexts[address] = ctx


def unregister_inproc(address: str) -> None:
    with _lock:
        _inproc_contexts.pop(address, None)


IPC_PREFIX = "frisky-ipc-"


def private_ipc_dir() -> str:
    """A fresh 0700 directory for ``ipc://`` endpoints (removed by the cluster on close).

    Its name carries this process's pid, ``frisky-ipc-<pid>-<random>``, so that
    :func:`sweep_ipc_dirs` can remove it should every process that knew of it be killed.
    """
    return tempfile.mkdtemp(prefix=f"{IPC_PREFIX}{os.getpid()}-")


def sweep_ipc_dirs() -> int:
    """Remove ipc directories whose owning process is gone; returns how many."""
    from frisky.procs import pid_alive

    root = tempfile.gettempdir()
    removed = 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(IPC_PREFIX):
            continue
        pid = name[len(IPC_PREFIX):].partition("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue  # not ours to judge, or its owner lives
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed += not os.path.exists(path)
    return removed


def remove_dir(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def _tune(sock: zmq.Socket) -> zmq.Socket:
    sock.setsockopt(zmq.LINGER, 0)
    # messages are batched, so counts stay small; never drop or block on a high-water mark
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    return sock


def router(ctx: zmq.Context, address: str, max_message_size: int | None = None,
           keys: curve.Keys | None = None) -> tuple[zmq.Socket, str]:
    """Bind a ROUTER at ``address`` (``tcp://host:0`` picks a port); returns it and its address.

    It refuses frames over ``max_message_size`` (default: the ``max_message_size`` setting)
    before allocating them, and peers that do not speak ZMTP 3 (see :mod:`frisky.zmq.zap`).
    With ``keys`` it is a CURVE server: only peers holding the cluster's keys get through.
    """
    sock = _tune(ctx.socket(zmq.ROUTER))
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, config.get("max_message_size", max_message_size))
    if keys is not None:
        curve.server(sock, keys)
    if not address.startswith("inproc://"):
        zap.protect(sock)
    if address.startswith("tcp://") and address.endswith(":0"):
        address = address[:-2] + ":*"
    try:
        sock.bind(address)
    except zmq.ZMQError as e:
        sock.close(0)
        raise OSError(f"cannot bind {address}: {e}") from e
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


# Closing with linger 0 hands the socket to ZeroMQ's reaper thread, which can discard a
# message its I/O thread has not written yet: a "bye" sent just before would be lost, and
# the scheduler would keep a gone client's results until its heartbeat timeout.
FLUSH_LINGER_MS = 200


def close_flushing(sock: zmq.Socket) -> None:
    """Close ``sock``, giving ZeroMQ up to ``FLUSH_LINGER_MS`` to deliver what was sent."""
    sock.close(linger=FLUSH_LINGER_MS)


def dealer(ctx: zmq.Context, address: str, identity: bytes | None = None,
           keys: curve.Keys | None = None) -> zmq.Socket:
    """Connect a DEALER to ``address`` (as a CURVE client proving ``keys``, if given)."""
    sock = _tune(ctx.socket(zmq.DEALER))
    if keys is not None and not address.startswith("inproc://"):
        curve.client(sock, keys)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    # peers start together and connect before the scheduler binds: retry fast, back off
    sock.setsockopt(zmq.RECONNECT_IVL, 2)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
    try:
        sock.connect(address)
    except zmq.ZMQError as e:
        sock.close(0)
        raise OSError(f"cannot connect to {address}: {e}") from e
    return sock


# pyzmq's Python layer turns int flags into enums and an empty non-blocking receive into
# an exception: several microseconds a message. The hot paths call the Cython methods.
_csend = _CSocket.send
_crecv = _CSocket.recv
_cget = _CSocket.get
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def send(sock: zmq.Socket, frames: list, copy: bool = True) -> None:
    """``send_multipart`` without pyzmq's Python layer."""
    last = len(frames) - 1
    for i in range(last):
        _csend(sock, frames[i], _SNDMORE, copy)
    _csend(sock, frames[last], 0, copy)


def recv(sock: zmq.Socket, copy: bool = True) -> list | None:
    """The next whole message if one is waiting, else None (never blocks, never raises Again)."""
    if not _cget(sock, _EVENTS) & _POLLIN:
        return None
    frames = [_crecv(sock, _NOBLOCK, copy)]
    while _cget(sock, _RCVMORE):
        frames.append(_crecv(sock, _NOBLOCK, copy))
    return frames


def recv_routed(sock: zmq.Socket, known: dict) -> tuple[list, str | None] | None:
    """:func:`recv` on a ROUTER that also gives, for a peer not in ``known``, the ZAP user id
    its connection was given (its role under CURVE, else None). Known peers cost nothing more."""
    if not _cget(sock, _EVENTS) & _POLLIN:
        return None
    frames = [_crecv(sock, _NOBLOCK, True)]
    user = None
    if frames[0] not in known and _cget(sock, _RCVMORE):
        first = _crecv(sock, _NOBLOCK, False)
        try:
            user = first.get("User-Id") or None
        except zmq.ZMQError:  # no user id: a peer accepted without one
            user = None
        frames.append(first.bytes)
    while _cget(sock, _RCVMORE):
        frames.append(_crecv(sock, _NOBLOCK, True))
    return frames, user


def check_address(address: str) -> None:
    """Raise ``ValueError`` for an address ZeroMQ cannot use."""
    if not isinstance(address, str) or "://" not in address:
        raise ValueError(f"not a scheduler address: {address!r} (expected tcp://host:port, ipc://path or inproc://name)")
    scheme, rest = address.split("://", 1)
    if scheme not in ("tcp", "ipc", "inproc"):
        raise ValueError(f"unsupported transport {scheme!r} in {address!r}")
    if scheme == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not host:
            raise ValueError(f"not a tcp address: {address!r} (expected tcp://host:port)")
        if port != "*" and not (port.isdigit() and 0 <= int(port) <= 65535):
            raise ValueError(f"port {port!r} in {address!r} is not a number in 0-65535")
    elif not rest:
        raise ValueError(f"{scheme} address {address!r} names nothing")


class Waker:
    """Wakes a thread blocked in ``zmq.Poller.poll`` from any thread, or from ``__del__``.

    A pipe, not a socket: ``os.write`` is safe from finalizers and signal handlers,
    and the flag keeps it to one syscall per wake-up however many events pile up.
    """

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        self.pending = False

    def wake(self) -> None:
        if not self.pending and self.wfd >= 0:
            self.pending = True
            try:
                os.write(self.wfd, b"x")
            except (BlockingIOError, OSError):  # pipe full (a wake-up is pending anyway) or closed
                pass

    def drain(self) -> None:
        """Empty the pipe, then re-arm. Call before handling the queued work."""
        try:
            while os.read(self.rfd, 4096):
                pass
        except (BlockingIOError, OSError):  # empty now (or closed): drained
            pass
        # only now re-arm: a wake() that saw the old flag came before the work we handle
        # next; one that sees the new flag writes a byte for the next poll
        self.pending = False

    def close(self) -> None:
        # mark closed first: a late wake() must never write into a reused fd number
        fds, self.rfd, self.wfd = (self.rfd, self.wfd), -1, -1
        for fd in fds:
            try:
                os.close(fd)
            except OSError:  # closed already: closing is all that was wanted
                pass
