"""A per-worker region of a per-host shared-memory arena: mapped once, pages reused.

A fresh segment per value costs every process that touches it a page-table set-up per
page (~14 ms per 256 MiB here), on the producer's side and on each reader's. An arena
file is mapped once per process and its pages are reused from value to value, so a
value's bytes land in, and are read from, pages that are already mapped.

Each worker owns one arena file, ``frisky-<cluster>-<pid>xa<token>`` in /dev/shm (the
names :func:`frisky.shm.sweep` and :func:`frisky.shm.sweep_owner` already remove), and is
the only process that allocates or frees its blocks: no cross-process allocator lock.
Other processes on the host map the file read-only, once, and keep it mapped.

Layout: a header page-table of one uint32 *generation* per 4 KiB page, then the data.
Blocks are page-aligned. A reader **pins** the block it views with a shared
``fcntl`` record lock on the block's byte range (the kernel drops it if the reader dies)
and checks the block's generation against the descriptor's; the owner reuses a freed
block only after taking (and dropping) an exclusive lock on that range, and bumps the
generation first, so a descriptor that arrives late for a reused block is refused.
In-process views (the owner's own values, or a reader in the owner's process) are
counted in :data:`_local_pins`: record locks do not conflict within one process.

The file is sparse and reserved with ``posix_fallocate`` as its high-water mark grows,
so a full /dev/shm makes :meth:`Arena.alloc` return None (the caller keeps the value on
the heap) instead of a SIGBUS later.

The host's share (``host_limit``) is one budget for all of a cluster's arenas on the
host, not a fixed split: before it reserves more, an arena adds up what the cluster's
arena files hold now (their allocated blocks, so a dead worker's removed file counts for
nothing at once). One busy producer may so use most of the share while its peers hold
little. Two arenas growing at the same instant may overshoot by one growth step each.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
import weakref
from typing import Any

from frisky.shm.segments import PREFIX, SHM_DIR, _check_id, _path, _token

PAGE = 4096
_GROW = 64 << 20  # reserve /dev/shm in steps this big: few fallocate calls
_GEN = struct.Struct("<I")

# One lock for this process's arena state. Blocks are freed from weakref finalizers, which
# may run in any thread and in the middle of code holding the lock (a garbage collection):
# they only queue their work (_defer), done by whoever takes the lock next (_locked).
_lock = threading.Lock()
_deferred: collections.deque = collections.deque()
_local_pins: dict[tuple[str, int], int] = {}  # (arena name, offset) -> live in-process views
_owned: dict[str, Arena] = {}  # arenas this process owns, by name
_mapped: dict[str, _Mapping] = {}  # arenas of other processes this process has mapped


def _drain() -> None:
    while _deferred:
        if not _lock.acquire(blocking=False):
            return  # the holder drains once it lets go
        try:
            while _deferred:
                fn, args = _deferred.popleft()
                fn(*args)
        finally:
            _lock.release()


@contextlib.contextmanager
def _locked():
    with _lock:
        yield
    _drain()


def _defer(fn, *args) -> None:
    _deferred.append((fn, args))
    _drain()


def _round(n: int) -> int:
    return -(-n // PAGE) * PAGE


class Block:
    """One allocated block, owned by this process: ``buf`` is a writable view of it.

    The block returns to its arena when ``buf`` and every view or value built on it are
    gone, and no reader on another process still pins it.
    """

    __slots__ = ("arena", "offset", "size", "gen", "buf", "__weakref__")

    def __init__(self, arena: Arena, offset: int, size: int, gen: int, buf: memoryview) -> None:
        self.arena, self.offset, self.size, self.gen, self.buf = arena, offset, size, gen, buf

    @property
    def name(self) -> str:
        return self.arena.name

    def descriptor(self) -> tuple[str, int, int, int]:
        """``(name, offset, nbytes, generation)``: what a reader needs to :func:`attach`."""
        return self.arena.name, self.offset, self.size, self.gen

    def __repr__(self) -> str:
        return f"<Block {self.arena.name}+{self.offset} {self.size} bytes gen {self.gen}>"


class Arena:
    """This worker's arena region: allocate blocks, take them back once nobody views them."""

    def __init__(self, cluster_id: str, limit: int, idle: int | None = None,
                 host_limit: int | None = None) -> None:
        _check_id(cluster_id)
        if limit < PAGE:
            raise ValueError(f"arena limit must be at least {PAGE} bytes, not {limit}")
        self.capacity = limit // PAGE * PAGE
        self.header = _round((self.capacity // PAGE) * _GEN.size)
        flags = os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        self.name = f"{PREFIX}{cluster_id}-{os.getpid():x}xa{_token}{os.urandom(3).hex()}"
        self._fd = os.open(os.path.join(SHM_DIR, self.name), flags, 0o600)
        self.host_limit = host_limit  # bytes all of this cluster's arenas on the host may reserve
        self._siblings = f"{PREFIX}{cluster_id}-"
        try:
            os.ftruncate(self._fd, self.header + self.capacity)
            self._reserve(0, self.header)
            self._mm = mmap.mmap(self._fd, self.header + self.capacity)
        except BaseException:
            os.close(self._fd)
            _unlink(self.name)
            raise
        self._top = 0  # bump pointer: data offsets below it have been handed out before
        self._reserved = 0  # data bytes reserved in /dev/shm (fallocate)
        self._free: dict[int, int] = {}  # offset -> size of free extents below _top
        self._ends: dict[int, int] = {}  # end -> offset of the same extents (coalescing)
        self._by_size: list[tuple[int, int]] = []  # (size, offset), sorted: best fit
        self._pending: list[tuple[int, int]] = []  # (offset, size) released but pinned by a reader
        self.used = 0  # bytes in live blocks
        # free pages kept reserved and mapped for the next values; past this they are
        # given back to the OS (and always on trim(), under memory pressure)
        self.idle = self.capacity // 10 if idle is None else max(0, idle)
        self._cold = False  # some free extent may have been punched: re-reserve on reuse
        self.closed = False
        with _locked():
            _owned[self.name] = self

    def _reserve(self, start: int, length: int) -> None:
        try:
            os.posix_fallocate(self._fd, start, length)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem that cannot reserve
                raise

    # --------------------------------------------------------------- allocate
    def alloc(self, nbytes: int) -> Block | None:
        """A writable block of ``nbytes`` (contents undefined), or None when the arena or
        /dev/shm is full: the caller keeps its value on the heap."""
        if nbytes <= 0 or self.closed:
            return None
        size = _round(nbytes)
        import numpy as np

        with _locked():
            if self._pending:
                self._reclaim()
            offset = self._take(size)
            if offset is None:
                return None
            self.used += size
            gen = _GEN.unpack_from(self._mm, (offset // PAGE) * _GEN.size)[0]
            key = (self.name, offset)
            _local_pins[key] = _local_pins.get(key, 0) + 1
        root = np.frombuffer(self._mm, np.uint8, count=nbytes, offset=self.header + offset)
        # the root array dies only after every view and value built on it has died
        weakref.finalize(root, _defer, self._release, offset, size).atexit = False
        return Block(self, offset, nbytes, gen, memoryview(root))

    def _take(self, size: int) -> int | None:
        i = bisect.bisect_left(self._by_size, (size, -1))
        if i < len(self._by_size):
            have, offset = self._by_size[i]
            if self._cold:
                if not self._host_room(size):
                    return None
                try:
                    self._reserve(self.header + offset, size)
                except OSError:  # /dev/shm is full
                    return None
            del self._by_size[i]
            del self._free[offset]
            del self._ends[offset + have]
            if have > size:
                self._insert(offset + size, have - size)
            elif not self._free:
                self._cold = False
            return offset
        if self._top + size > self.capacity:
            return None
        offset = self._top
        if offset + size > self._reserved:
            grow = min(max(_GROW, offset + size - self._reserved), self.capacity - self._reserved)
            if not self._host_room(grow):
                grow = offset + size - self._reserved  # no room for a whole step: just this block
                if not self._host_room(grow):
                    return None
            try:
                self._reserve(self.header + self._reserved, grow)
            except OSError:  # /dev/shm is full: no block, the value stays on the heap
                return None
            self._reserved += grow
        self._top = offset + size
        return offset

    def _host_room(self, more: int) -> bool:
        """Whether the cluster's arenas on this host may reserve ``more`` bytes."""
        if self.host_limit is None:
            return True
        held = 0
        prefix = self._siblings
        try:
            with os.scandir(SHM_DIR) as it:
                for e in it:
                    name = e.name
                    if name.startswith(prefix) and "xa" in name:
                        try:
                            held += e.stat(follow_symlinks=False).st_blocks * 512
                        except FileNotFoundError:  # removed meanwhile (a worker gone)
                            pass
        except OSError:
            return True  # cannot look: the capacity and /dev/shm's own limit still hold
        return held + more <= self.host_limit

    def _insert(self, offset: int, size: int) -> None:
        # coalesce with free neighbours, and give the top extent back to the bump pointer
        before = self._ends.pop(offset, None)
        if before is not None:
            bsize = self._free.pop(before)
            self._by_size.remove((bsize, before))
            offset, size = before, size + bsize
        after = self._free.pop(offset + size, None)
        if after is not None:
            del self._ends[offset + size + after]
            self._by_size.remove((after, offset + size))
            size += after
        if offset + size == self._top:
            self._top = offset
            return
        self._free[offset] = size
        self._ends[offset + size] = offset
        bisect.insort(self._by_size, (size, offset))

    # ----------------------------------------------------------------- release
    def _release(self, offset: int, size: int) -> None:
        # under _lock (see _defer)
        key = (self.name, offset)
        left = _local_pins.get(key, 0) - 1
        if left > 0:
            _local_pins[key] = left
        else:
            _local_pins.pop(key, None)
        self.used -= size
        if self.closed:
            return
        self._pending.append((offset, size))
        self._reclaim()
        if self._reserved - self.used > self.idle:
            self._trim()

    def trim(self) -> int:
        """Give the pages of every free block back to the OS; returns the bytes freed."""
        with _locked():
            return 0 if self.closed else self._trim()

    def _trim(self) -> int:
        freed = 0
        for offset, size in list(self._free.items()) + [(self._top, self._reserved - self._top)]:
            if size > 0:
                # MADV_REMOVE frees the shmem pages themselves (every mapping of them too)
                self._mm.madvise(mmap.MADV_REMOVE, self.header + offset, size)
                freed += size
        self._cold = bool(self._free)
        self._reserved = self._top
        return freed

    def _reclaim(self) -> None:
        """Free released blocks that no reader pins any more (under ``_lock``)."""
        still = []
        for offset, size in self._pending:
            if (self.name, offset) in _local_pins or not self._unpinned(offset, size):
                still.append((offset, size))
                continue
            pos = (offset // PAGE) * _GEN.size
            _GEN.pack_into(self._mm, pos, (_GEN.unpack_from(self._mm, pos)[0] + 1) & 0xFFFFFFFF)
            self._insert(offset, size)
        self._pending = still

    def _unpinned(self, offset: int, size: int) -> bool:
        start = self.header + offset
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, size, start)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EAGAIN):
                return False  # a reader on another process still views it
            raise
        fcntl.lockf(self._fd, fcntl.LOCK_UN, size, start)
        return True

    def reclaim(self) -> int:
        """Retry blocks whose readers have since let go; returns how many stay pinned."""
        with _locked():
            if self._pending and not self.closed:
                self._reclaim()
            return len(self._pending)

    def stats(self) -> dict:
        with _locked():
            free = sum(self._free.values())
            return {"capacity": self.capacity, "used": self.used, "top": self._top, "free_below_top": free,
                    "pinned": len(self._pending), "reserved": self._reserved}

    def close(self) -> None:
        """Unlink the arena file. Views in this and other processes stay valid memory."""
        with _locked():
            if self.closed:
                return
            self.closed = True
            _owned.pop(self.name, None)
        _unlink(self.name)
        try:
            self._mm.close()
        except BufferError:  # live views keep the mapping; it goes with the last of them
            pass
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"<Arena {self.name} {self.used}/{self.capacity} bytes>"


def _unlink(name: str) -> None:
    try:
        os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------- readers
class _Mapping:
    """Another process's arena, mapped read-only once in this process and kept."""

    __slots__ = ("name", "fd", "mm", "header", "size", "pins")

    def __init__(self, name: str) -> None:
        fd = os.open(_path(name), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < PAGE:
                raise ValueError(f"{name} is not an arena")
            self.mm = mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ)
        except BaseException:
            os.close(fd)
            raise
        self.name, self.fd = name, fd  # kept open: closing any fd drops this process's locks
        self.header = _header_for(st.st_size)
        self.size = st.st_size
        self.pins: dict[int, int] = {}  # offset -> live views in this process


def _header_for(file_size: int) -> int:
    """The header length of an arena file of ``file_size`` bytes (as :class:`Arena` lays it)."""
    # capacity c is a multiple of PAGE and file_size = _round(c / PAGE * 4) + c
    lo, hi = 0, file_size // PAGE
    while lo < hi:  # the largest capacity (in pages) that fits
        mid = (lo + hi + 1) // 2
        if _round(mid * _GEN.size) + mid * PAGE <= file_size:
            lo = mid
        else:
            hi = mid - 1
    return file_size - lo * PAGE


def attach(name: str, offset: int, nbytes: int, gen: int) -> memoryview:
    """A read-only view of block ``offset`` of arena ``name``, pinned while it lives.

    The arena is mapped on first use and stays mapped, so attaching is an offset
    computation, a pin and a view: no new mapping. Raises FileNotFoundError when the arena
    is gone or the block was freed and reused (a stale descriptor), ValueError when the
    descriptor does not fit the arena.
    """
    if type(offset) is not int or type(nbytes) is not int or type(gen) is not int:
        raise ValueError("arena descriptor fields must be integers")
    if offset < 0 or nbytes <= 0 or offset % PAGE:
        raise ValueError(f"bad arena block offset {offset} / size {nbytes}")
    # a plain dict read is atomic: the common case (mapped before) takes no lock here
    m = _mapped.get(name)
    if m is None:
        owner = _owned.get(name)
        if owner is not None:
            return _attach_own(owner, offset, nbytes, gen)
        m = _map(name)
    start = m.header + offset
    if start + nbytes > m.size:
        raise ValueError(f"arena block {offset}+{nbytes} lies outside {name}")
    size = -(-nbytes // PAGE) * PAGE
    with _lock:
        count = m.pins.get(offset, 0)
        if count == 0:
            fcntl.lockf(m.fd, fcntl.LOCK_SH, size, start)  # never blocks: the owner only tries
        m.pins[offset] = count + 1
        if _GEN.unpack_from(m.mm, (offset >> 12) * _GEN.size)[0] != gen:
            _unpin(m, offset, size, start)
            stale = True
        else:
            stale = False
            np = _np or _numpy()
            root = np.frombuffer(m.mm, np.uint8, count=nbytes, offset=start)
            # a weak reference with a callback: a tenth of what weakref.finalize costs
            ref = weakref.ref(root, _dropped)
            _watched[id(ref)] = (ref, m, offset, size, start)
    if _deferred:
        _drain()
    if stale:
        raise FileNotFoundError(f"arena block {name}+{offset} was freed")
    return memoryview(root)


def _map(name: str) -> _Mapping:
    m = _Mapping(name)
    with _locked():
        other = _mapped.setdefault(name, m)
    if other is not m:  # another thread mapped it meanwhile
        os.close(m.fd)
        m.mm.close()
    return other


def _dropped(ref: weakref.ref) -> None:
    # the last view of a block attached from another process's arena is gone (any thread,
    # maybe inside a locked region: only queue the unpin, see _defer)
    entry = _watched.pop(id(ref), None)
    if entry is not None:
        _defer(_unpin, *entry[1:])


def _attach_own(arena: Arena, offset: int, nbytes: int, gen: int) -> memoryview:
    start = arena.header + offset
    if start + nbytes > arena.header + arena.capacity:
        raise ValueError(f"arena block {offset}+{nbytes} lies outside {arena.name}")
    key = (arena.name, offset)
    import numpy as np

    with _locked():
        if key not in _local_pins or _GEN.unpack_from(arena._mm, (offset // PAGE) * _GEN.size)[0] != gen:
            raise FileNotFoundError(f"arena block {arena.name}+{offset} was freed")
        _local_pins[key] += 1
    root = np.frombuffer(arena._mm, np.uint8, count=nbytes, offset=start)
    root.flags.writeable = False
    weakref.finalize(root, _defer, _unpin_own, arena, offset).atexit = False
    return memoryview(root)


def _unpin_own(arena: Arena, offset: int) -> None:
    # under _lock (see _defer)
    key = (arena.name, offset)
    left = _local_pins.get(key, 0) - 1
    if left > 0:
        _local_pins[key] = left
        return
    _local_pins.pop(key, None)
    if arena._pending and not arena.closed:
        arena._reclaim()


def _unpin(m: _Mapping, offset: int, size: int, start: int) -> None:
    # under _lock (see _defer)
    left = m.pins.get(offset, 0) - 1
    if left > 0:
        m.pins[offset] = left
        return
    m.pins.pop(offset, None)
    try:
        fcntl.lockf(m.fd, fcntl.LOCK_UN, size, start)
    except OSError:  # the fd is gone with a mapping dropped at exit: nothing left to unpin
        pass


def _numpy() -> Any:
    """numpy, imported on first use (``import frisky`` stays cheap) and kept at hand."""
    global _np
    import numpy

    _np = numpy
    return numpy


_np: Any = None
_watched: dict[int, tuple] = {}  # id(weak ref to a view of another process's block) -> (ref, pin)


def pinned(name: str) -> int:
    """Blocks of arena ``name`` this process views (tests and telemetry)."""
    with _locked():
        m = _mapped.get(name)
        if m is not None:
            return len(m.pins)
        return sum(1 for (n, _) in _local_pins if n == name)


def trim() -> int:
    """Unmap arenas whose file is gone (owner closed or died) and that nothing here views."""
    dropped = 0
    with _locked():
        for name, m in list(_mapped.items()):
            if m.pins or os.path.exists(os.path.join(SHM_DIR, name)):
                continue
            del _mapped[name]
            os.close(m.fd)
            try:
                m.mm.close()
            except BufferError:  # a view without a pin (should not happen): the mapping stays
                continue
            dropped += 1
    return dropped


def is_block(obj: Any) -> bool:
    return type(obj) is Block
