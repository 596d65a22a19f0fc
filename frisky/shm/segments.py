"""POSIX shared-memory segments: plain files in /dev/shm, mapped with mmap.

A segment is named ``frisky-<cluster>-<id>``. The cluster id encodes the pid of the
process that owns the cluster and the segment id the pid of the process that created the
segment, so a sweeper can remove what dead processes left behind. Readers map segments
read-only; the kernel keeps the pages while any mapping exists, so views stay valid after
the creator unlinks the segment or dies.

``multiprocessing.shared_memory`` is not used: its resource tracker unlinks segments it
thinks leaked, including ones handed on to other processes.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import re
import stat
import threading
from typing import Any

from frisky.procs import pid_alive
from frisky.telemetry import now, span

SHM_DIR = "/dev/shm"
PREFIX = "frisky-"
_ID = re.compile(r"[A-Za-z0-9_]+")  # no '-' (the name separator), '/' or '.'
_NAME = re.compile(r"frisky-[A-Za-z0-9_]+-[A-Za-z0-9_]+")
_NUMPY_COPY = 64 * 1024  # above this numpy copies (it releases the GIL; memoryview does not)

_counter = itertools.count()
_token = os.urandom(2).hex()  # with the pid and counter: unique even after pid reuse


def new_cluster_id() -> str:
    """A short, filename-safe, unique cluster id that encodes this process's pid."""
    return f"{os.getpid():x}p{os.urandom(3).hex()}"


def cluster_pid(cluster_id: str) -> int | None:
    """The owner pid encoded in ``cluster_id`` by :func:`new_cluster_id`, or None."""
    head, sep, _ = cluster_id.partition("p")
    try:
        return int(head, 16) if sep else None
    except ValueError:
        return None


def _check_id(cluster_id: str) -> None:
    if not _ID.fullmatch(cluster_id):
        raise ValueError(f"invalid cluster id {cluster_id!r}")


def _path(name: str) -> str:
    # Names come from peers: never let one reach outside SHM_DIR or another program's files.
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid segment name {name!r}")
    return os.path.join(SHM_DIR, name)


class Segment:
    """One mapped segment. ``buf`` is writable for the creator, read-only for attachers."""

    __slots__ = ("name", "size", "buf", "_mmap")

    def __init__(self, name: str, size: int, mm: mmap.mmap | None, writable: bool) -> None:
        self.name = name
        self.size = size
        self._mmap = mm
        if mm is not None:
            self.buf = memoryview(mm)
        else:  # mmap cannot map 0 bytes
            self.buf = memoryview(bytearray() if writable else b"")

    def close(self) -> None:
        """Drop this process's mapping, unless views of it are still alive (they keep it)."""
        mm = self._mmap
        if mm is None:
            return
        try:
            self.buf.release()
            mm.close()
        except BufferError:
            return  # exported views remain; the mapping goes when the last one does
        self._mmap = None

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Segment {self.name} {self.size} bytes>"


def create(cluster_id: str, size: int) -> Segment:
    """Create and map a new writable segment of ``size`` bytes (contents zero).

    Raises OSError (ENOSPC) when /dev/shm cannot hold it: the space is reserved up front,
    so a full /dev/shm never turns into SIGBUS on a later write.
    """
    _check_id(cluster_id)
    if size < 0:
        raise ValueError(f"size must not be negative: {size}")
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    while True:
        name = f"{PREFIX}{cluster_id}-{os.getpid():x}x{_token}{next(_counter):x}"
        path = os.path.join(SHM_DIR, name)
        try:
            fd = os.open(path, flags, 0o600)
            break
        except FileExistsError:  # left by an earlier process with our pid: take the next name
            continue
    try:
        mm = None
        if size:
            os.ftruncate(fd, size)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # filesystem cannot reserve
                    raise
            mm = mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        unlink(name)
        raise
    os.close(fd)  # the mapping keeps the file alive
    return Segment(name, size, mm, writable=True)


def write(cluster_id: str, data: Any) -> Segment:
    """Create a segment holding a copy of ``data`` (any buffer); records span ``shm.write``."""
    from frisky.data.buffers import byte_view

    t0 = now()
    src = byte_view(data)
    seg = create(cluster_id, src.nbytes)
    try:
        if src.nbytes >= _NUMPY_COPY:
            import numpy as np

            np.copyto(np.frombuffer(seg.buf, np.uint8), np.frombuffer(src, np.uint8))
        elif src.nbytes:
            seg.buf[:] = src
    except BaseException:
        seg.close()
        unlink(seg.name)
        raise
    span("shm.write", t0)
    return seg


def attach(name: str) -> Segment:
    """Map segment ``name`` read-only; records span ``shm.map``. FileNotFoundError if gone."""
    t0 = now()
    fd = os.open(_path(name), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{name} is not a shared-memory segment")
        size = st.st_size
        mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
    finally:
        os.close(fd)
    seg = Segment(name, size, mm, writable=False)
    span("shm.map", t0)
    return seg


def unlink(name: str) -> None:
    """Remove segment ``name``; existing mappings stay valid. Missing is not an error."""
    try:
        os.unlink(_path(name))
    except FileNotFoundError:  # released or swept already: the result wanted
        pass


def _names() -> list[str]:
    try:
        return [n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)]
    except FileNotFoundError:
        return []


def _unlink_all(names: list[str]) -> int:
    removed = 0
    for name in names:
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed += 1
        except FileNotFoundError:  # a concurrent sweep or release got there first
            pass
        except PermissionError:  # another user's file in the shared directory
            pass
    return removed


def sweep(cluster_id: str | None = None) -> int:
    """Unlink every segment of ``cluster_id``, or (None) of every cluster whose owner is dead.

    Returns the number of segments removed. Ids that encode no pid are left alone.
    """
    if cluster_id is not None:
        _check_id(cluster_id)
        prefix = f"{PREFIX}{cluster_id}-"
        return _unlink_all([n for n in _names() if n.startswith(prefix)])
    dead: dict[str, bool] = {}
    doomed = []
    for name in _names():
        cluster = name[len(PREFIX) :].partition("-")[0]
        if cluster not in dead:
            pid = cluster_pid(cluster)
            dead[cluster] = pid is not None and pid > 0 and not pid_alive(pid)
        if dead[cluster]:
            doomed.append(name)
    return _unlink_all(doomed)


def sweep_owner(cluster_id: str, pid: int) -> int:
    """Unlink the segments that process ``pid`` created in ``cluster_id``; returns the count."""
    _check_id(cluster_id)
    prefix = f"{PREFIX}{cluster_id}-{pid:x}x"
    return _unlink_all([n for n in _names() if n.startswith(prefix)])


class Registry:
    """Per-process reference counts of segments; a segment is unlinked when its count hits 0.

    Thread-safe. Names unknown to the registry are ignored by :meth:`decref`, so a
    duplicated release message cannot unlink a segment twice or raise.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, int] = {}
        self._segments: dict[str, Segment] = {}

    def add(self, seg: Segment) -> None:
        """Track ``seg`` with one reference (another one if it is tracked already)."""
        with self._lock:
            self._segments[seg.name] = seg
            self._refs[seg.name] = self._refs.get(seg.name, 0) + 1

    def incref(self, name: str) -> None:
        """Take one more reference on ``name`` (starting at 1 for a name handed to us)."""
        with self._lock:
            self._refs[name] = self._refs.get(name, 0) + 1

    def decref(self, name: str) -> bool:
        """Drop one reference; at zero close and unlink the segment and return True."""
        with self._lock:
            count = self._refs.get(name)
            if count is None:
                return False
            if count > 1:
                self._refs[name] = count - 1
                return False
            del self._refs[name]
            seg = self._segments.pop(name, None)
        if seg is not None:
            seg.close()
        unlink(name)
        return True

    def release_all(self) -> None:
        """Close and unlink every tracked segment, whatever its count (process shutdown)."""
        with self._lock:
            names = list(self._refs)
            segments = list(self._segments.values())
            self._refs.clear()
            self._segments.clear()
        for seg in segments:
            seg.close()
        for name in names:
            unlink(name)

    def count(self, name: str) -> int:
        """Current reference count of ``name`` (0 when untracked)."""
        return self._refs.get(name, 0)

    def get(self, name: str) -> Segment | None:
        """The tracked :class:`Segment` called ``name``, if this process holds its mapping."""
        return self._segments.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._refs

    def __len__(self) -> int:
        return len(self._refs)
