"""Per-cluster CURVE keys, the two roles, and the ZAP policy that checks them.

A cluster has three key pairs: the *server* pair, held by the scheduler and the workers
(every socket that listens: the scheduler's ROUTER, each worker's data ROUTER), the
*worker* pair, which may register as a worker, and the *client* pair, which may only act
as a client. Every connection proves, inside the CURVE handshake, that it holds the
secret half of one of the two peer pairs; the ZAP handler (:mod:`frisky.zmq.zap`) names
its role as the connection's ZAP user id, which the scheduler reads on ``hello-worker``.
A client holds the server's public key only: it cannot listen as a worker either.

On disk (``frisky keys new DIR``): ``DIR/cluster.json`` (everything; for the scheduler
and workers) and ``DIR/client.json`` (the client pair and the server's public key), both
0600 in a 0700 directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils import z85

from frisky.zmq import zap

WORKER, CLIENT = "worker", "client"
CLUSTER_FILE, CLIENT_FILE = "cluster.json", "client.json"


def available() -> bool:
    return bool(zmq.has("curve"))


@dataclass(frozen=True)
class Keys:
    """What one process holds. ``server_secret`` only in the scheduler and workers."""

    role: str
    server_public: bytes
    public: bytes
    secret: bytes
    server_secret: bytes | None = None
    worker_public: bytes | None = None  # the two peer public keys the server side accepts
    client_public: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Keys:
        if not isinstance(doc, dict):
            raise ValueError("keys must be an object")
        try:
            fields = {k: (v.encode() if k != "role" else v) for k, v in doc.items()}
            keys = cls(**fields)
        except (TypeError, AttributeError) as e:
            raise ValueError(f"malformed keys: {e}") from None
        if keys.role not in (WORKER, CLIENT):
            raise ValueError(f"unknown key role {keys.role!r}")
        for name in ("server_public", "public", "secret", "server_secret", "worker_public", "client_public"):
            v = getattr(keys, name)
            if v is not None and len(v) != 40:
                raise ValueError(f"{name} is not a Z85 CURVE key (40 characters)")
        return keys

    @property
    def serves(self) -> bool:
        """Whether these keys can listen (scheduler and workers)."""
        return self.server_secret is not None


def generate() -> tuple[Keys, Keys]:
    """Fresh keys for a cluster: (the scheduler's and workers', the clients')."""
    if not available():
        raise RuntimeError("this libzmq has no CURVE support (zmq.has('curve') is False)")
    spub, ssec = zmq.curve_keypair()
    wpub, wsec = zmq.curve_keypair()
    cpub, csec = zmq.curve_keypair()
    cluster = Keys(WORKER, spub, wpub, wsec, ssec, wpub, cpub)
    client = Keys(CLIENT, spub, cpub, csec)
    return cluster, client


def _write(path: str, doc: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(doc, indent=1).encode() + b"\n")
    finally:
        os.close(fd)


def write(directory: str, cluster: Keys, client: Keys | None) -> None:
    """Write ``cluster.json`` (and ``client.json``) readable by their owner only."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    _write(os.path.join(directory, CLUSTER_FILE), cluster.to_json())
    if client is not None:
        _write(os.path.join(directory, CLIENT_FILE), client.to_json())


def new(directory: str) -> None:
    """``frisky keys new DIR``."""
    cluster, client = generate()
    write(directory, cluster, client)


def load(source: str | dict | Keys, *, serving: bool = False) -> Keys:
    """Keys from a directory (``cluster.json`` when ``serving``, else ``client.json``, else
    ``cluster.json`` as a worker), a file, or a JSON object; ``ValueError`` saying why not."""
    if isinstance(source, Keys):
        keys = source
    elif isinstance(source, dict):
        keys = Keys.from_json(source)
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            names = [CLUSTER_FILE] if serving else [CLIENT_FILE, CLUSTER_FILE]
            found = [os.path.join(path, n) for n in names if os.path.exists(os.path.join(path, n))]
            if not found:
                raise ValueError(f"no {' or '.join(names)} in {path}")
            path = found[0]
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                doc = json.loads(f.read())
        except OSError as e:
            raise ValueError(f"cannot read keys {path}: {e.strerror}") from None
        except ValueError as e:
            raise ValueError(f"keys {path} are not JSON: {e}") from None
        if st.st_mode & 0o077:
            raise ValueError(f"keys {path} are readable by others (mode {st.st_mode & 0o777:o}): chmod 600 it")
        keys = Keys.from_json(doc)
    if serving and not keys.serves:
        raise ValueError("these are client keys: a scheduler or worker needs the cluster's keys (cluster.json)")
    return keys


def server(sock: zmq.Socket, keys: Keys) -> None:
    """Make ``sock`` (before bind) a CURVE server with the cluster's server key."""
    sock.curve_server = True
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public


def client(sock: zmq.Socket, keys: Keys) -> None:
    """Make ``sock`` (before connect) a CURVE client proving ``keys``' role."""
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


def policy(keys: Keys):
    """A ZAP policy accepting only CURVE peers holding the worker or the client key (and
    NULL peers on bulk sockets, whose every frame is sealed: see :mod:`frisky.zmq.bulk`)."""
    roles = {}
    for pub, role in ((keys.worker_public, WORKER), (keys.client_public, CLIENT)):
        if pub is not None:
            roles[z85.decode(pub)] = role

    def decide(domain: str, address: str, mechanism: str, credentials: list) -> str | tuple[None, str] | None:
        if domain == zap.BULK_DOMAIN:
            # a worker's bulk socket: anyone may connect, nothing it sends is trusted
            # unsealed (frisky.zmq.bulk), and it never carries a request
            return None if mechanism == "NULL" else f"{mechanism} peers are not expected on a bulk socket"
        if mechanism != "CURVE":
            return f"{mechanism} peers are not accepted: this cluster needs its keys"
        role = roles.get(credentials[0]) if credentials else None
        if role is None:
            return "unknown CURVE key"
        return None, role

    return decide


def network_facing(address: str) -> bool:
    """Whether a bind to ``address`` can be reached from other hosts: a TCP address that is
    not loopback. ipc, inproc and names that do not resolve (the bind fails on its own) are not."""
    import ipaddress
    import socket

    if not address.startswith("tcp://"):
        return False
    host = address[len("tcp://"):].rpartition(":")[0].strip("[]")
    if host == "*":
        return True
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name or an interface: what does it resolve to?
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return any(not ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)
