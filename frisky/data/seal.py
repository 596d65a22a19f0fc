"""AES-256-GCM sealing of the messages that carry values between hosts (the bulk path).

A *link* joins one requester (a worker or a client thread) to one serving worker. The
requester picks the link secret (32 random bytes) and sends it inside every CURVE-protected
``get`` (so only the two ends know it); the answers then travel on a plain ZeroMQ
connection, every frame sealed here. Keys come from the secret with HKDF-SHA256:

- server to requester: ``HKDF(secret, salt, "frisky bulk reply")`` where ``salt`` is 16
  random bytes the server picks for its side of the link (so a requester that reused a
  secret still gets a key never used before);
- requester to server (the ``attach`` that names the plain connection):
  ``HKDF(secret, "", "frisky bulk attach")``.

Nonces are a per-key counter (never reset; one sender per key), checked by the receiver to
run in sequence, so a dropped, replayed, reordered or repeated part is refused. Every part carries a
header, bound as associated data: magic, flags, salt, transfer id, counter, the frame's
plaintext length and this part's offset in it. A frame larger than :data:`PART` is sealed
in parts, each a ZeroMQ message of its own, so the receiver decrypts one part while the
next is on the wire. Nothing here does I/O.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

MAGIC = b"FGC1"
HEADER = struct.Struct("<4sB3x16sQQQQ")  # magic, flags, salt, xfer, counter, total, offset
TAG = 16
KEY_BYTES = 32
SALT_BYTES = 16
IDENT_BYTES = 16
# plaintext bytes per sealed part: a sealed part is 1 MiB, under the workers' fixed mmap
# threshold (frisky.deploy.malloc_tuning), so the buffers each end allocates per part come
# warm from the heap instead of being faulted in afresh; and small enough to pipeline
PART = (1 << 20) - HEADER.size - TAG
LAST_PART = 1  # the last part of its frame
LAST_FRAME = 2  # ... and that frame is the last of its message
_BIG = 64 << 10  # frames above this are received into uninitialised (pooled) memory

_REPLY_INFO = b"frisky bulk reply"
_ATTACH_INFO = b"frisky bulk attach"


class SealError(ValueError):
    """A sealed part that is malformed, out of sequence, or fails to authenticate."""


def new_secret() -> bytes:
    return os.urandom(KEY_BYTES)


def new_ident() -> bytes:
    return os.urandom(IDENT_BYTES)


def _aead(secret: bytes, salt: bytes, info: bytes):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt or None, info=info).derive(secret)
    return AESGCM(key)


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "little")


class Sealer:
    """One sending side of a link: seals messages under one key with a growing counter."""

    def __init__(self, secret: bytes, attach: bool = False) -> None:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"a link secret is {KEY_BYTES} bytes")
        self.salt = bytes(SALT_BYTES) if attach else os.urandom(SALT_BYTES)
        self._aead = _aead(secret, b"" if attach else self.salt, _ATTACH_INFO if attach else _REPLY_INFO)
        self.counter = 0
        self.sealed = 0  # plaintext bytes sealed, for telemetry

    def seal(self, xfer: int, frames: list) -> Iterator[memoryview]:
        """The sealed parts of message ``frames`` (transfer ``xfer``), each one ZeroMQ message."""
        last_frame = len(frames) - 1
        for i, f in enumerate(frames):
            mv = memoryview(f).cast("B")
            total = mv.nbytes
            offset = 0
            while True:
                n = min(PART, total - offset)
                flags = 0
                if offset + n >= total:
                    flags = LAST_PART | (LAST_FRAME if i == last_frame else 0)
                yield self._part(flags, xfer, total, offset, mv[offset:offset + n])
                offset += n
                if flags:
                    break

    def _part(self, flags: int, xfer: int, total: int, offset: int, data: memoryview) -> memoryview:
        counter = self.counter
        self.counter = counter + 1
        out = _buffer(HEADER.size + data.nbytes + TAG, pooled=False)  # heap memory, reused part to part
        aad = HEADER.pack(MAGIC, flags, self.salt, xfer, counter, total, offset)
        out[:HEADER.size] = aad
        # encrypt_into releases the GIL: ZeroMQ's I/O thread sends the last part meanwhile
        self._aead.encrypt_into(_nonce(counter), data, aad, out[HEADER.size:])
        self.sealed += data.nbytes
        return out


def peek(part) -> tuple[int, int]:
    """``(flags, xfer)`` of a part, unauthenticated (for routing only); SealError if not a part."""
    mv = memoryview(part)
    if mv.nbytes < HEADER.size + TAG or bytes(mv[:4]) != MAGIC:
        raise SealError("not a sealed part")
    _, flags, _, xfer, _, _, _ = HEADER.unpack_from(mv, 0)
    return flags, xfer


class Opener:
    """The receiving side of a link: opens parts in order and reassembles whole messages.

    Replies must come in sequence, counter after counter under each salt (a new salt, i.e.
    a server that remade its side of the link, starts again at 0); attaches need only grow.
    Any failure raises :class:`SealError`; the link is not to be trusted afterwards (its
    owner drops it), so no partial state needs to survive one.
    """

    MAX_SALTS = 64  # a server remakes its side of a link now and then, not without end

    def __init__(self, secret: bytes, attach: bool = False, max_frame: int = 1 << 30) -> None:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"a link secret is {KEY_BYTES} bytes")
        self.secret = secret
        self.attach = attach
        self.max_frame = max_frame
        self._keys: dict[bytes, list] = {}  # salt -> [AESGCM, last counter opened]
        self.frames: list = []  # the message being reassembled
        self.buf: memoryview | None = None  # the frame being reassembled
        self.xfer: int | None = None
        self.salt: bytes | None = None
        self._offset = 0
        self.opened = 0  # plaintext bytes opened, for telemetry

    def _key(self, salt: bytes) -> list:
        state = self._keys.get(salt)
        if state is None:
            if self.attach and salt != bytes(SALT_BYTES):
                raise SealError("an attach part with a salt")
            if len(self._keys) >= self.MAX_SALTS:
                raise SealError("too many salts on one link")
            aead = _aead(self.secret, b"" if self.attach else salt, _ATTACH_INFO if self.attach else _REPLY_INFO)
            state = self._keys[salt] = [aead, -1]
        return state

    def feed(self, part) -> tuple[int, list] | None:
        """Open one part; ``(xfer, frames)`` once it completes a message, else None."""
        mv = memoryview(part).cast("B")
        if mv.nbytes < HEADER.size + TAG:
            raise SealError(f"a sealed part of {mv.nbytes} bytes is too short")
        magic, flags, salt, xfer, counter, total, offset = HEADER.unpack_from(mv, 0)
        n = mv.nbytes - HEADER.size - TAG
        if magic != MAGIC or flags > LAST_PART | LAST_FRAME or flags == LAST_FRAME:
            raise SealError("not a sealed part (bad magic or flags)")
        if total > self.max_frame or offset + n > total or (flags and offset + n != total):
            raise SealError(f"part of {n} bytes at {offset} does not fit a frame of {total}")
        midway = self.buf is not None or self.frames
        if midway and (xfer != self.xfer or salt != self.salt):
            raise SealError("a message's parts from two transfers")
        state = self._key(salt)
        if counter != state[1] + 1 and (not self.attach or counter <= state[1]):
            raise SealError(f"part {counter} out of sequence (after {state[1]})")
        if self.buf is None:
            if offset:
                raise SealError("a message starts in the middle of a frame")
            buf = _buffer(total)
        else:
            if offset != self._offset or total != self.buf.nbytes:
                raise SealError("a part out of place in its frame")
            buf = self.buf
        try:
            state[0].decrypt_into(_nonce(counter), mv[HEADER.size:], bytes(mv[:HEADER.size]), buf[offset:offset + n])
        except Exception as e:  # InvalidTag (or a length the library refuses): never accepted
            raise SealError(f"a sealed part failed to authenticate ({type(e).__name__})") from None
        state[1] = counter
        self.xfer, self.salt = xfer, salt
        self.opened += n
        if not flags:
            self.buf, self._offset = buf, offset + n
            return None
        self.buf = None
        self.frames.append(buf)
        if not flags & LAST_FRAME:
            return None
        frames, self.frames = self.frames, []
        return xfer, frames


def _buffer(total: int, pooled: bool = True) -> memoryview:
    """A writable buffer, not zero-filled when large (every byte is written next)."""
    if total < _BIG:
        return memoryview(bytearray(total))
    if pooled:
        from frisky.data import bufpool

        return bufpool.pool.take(total)
    import numpy as np

    return memoryview(np.empty(total, np.uint8))
