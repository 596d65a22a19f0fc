"""Low-level file I/O for the spill file: O_DIRECT probing, aligned buffers, full reads/writes.

O_DIRECT bypasses the page cache, so spilling does not evict the very memory the worker is
trying to free and runs at the device's streaming rate. It needs the buffer address, the file
offset and the length aligned (we use the filesystem block, at least a page, for all three).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from typing import Any

# errnos with which a filesystem says "no O_DIRECT here" (tmpfs before Linux 6.6, ramfs, fuse …)
_NO_DIRECT = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


def alignment(directory: str) -> int:
    """The I/O alignment for files in ``directory``: the fs block size, at least one page."""
    try:
        bsize = os.statvfs(directory).f_bsize
    except OSError:
        bsize = 0
    align = max(mmap.PAGESIZE, 4096, bsize)
    if align & (align - 1):  # not a power of two: odd fs; fall back to the page size
        align = max(mmap.PAGESIZE, 4096)
    return align


def align_up(n: int, align: int) -> int:
    """``n`` rounded up to a multiple of ``align`` (a power of two)."""
    return (n + align - 1) & ~(align - 1)


def aligned_buffer(size: int, align: int = 4096) -> Any:
    """An uninitialised uint8 numpy array of ``size`` bytes starting at an ``align`` boundary.

    numpy backs large arrays with transparent huge pages: first-touch page faults, a large part
    of reading into fresh memory on a VM, cost about half of what they do in a plain mmap.
    """
    import numpy as np

    raw = np.empty(size + align, np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip:skip + size]


def open_data_file(path: str, direct: bool | None, align: int) -> tuple[int, bool]:
    """Create ``path`` (0600) and return ``(fd, is_direct)``.

    ``direct=None`` probes O_DIRECT by opening and writing one aligned block, and falls back to
    buffered I/O if the filesystem refuses; ``True`` insists (OSError if refused); ``False`` never
    tries.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    o_direct = getattr(os, "O_DIRECT", 0)
    if direct is not False and o_direct:
        try:
            fd = os.open(path, flags | o_direct, 0o600)
        except OSError as e:
            if direct or e.errno not in _NO_DIRECT:
                raise
            # Some filesystems (ramfs) create the file and only then refuse the flag.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            try:
                # Some filesystems accept the flag at open and refuse the first write instead.
                with memoryview(mmap.mmap(-1, align)) as probe:  # page aligned
                    os.pwrite(fd, probe, 0)
                os.ftruncate(fd, 0)
                return fd, True
            except OSError as e:
                if e.errno == errno.ENOSPC:  # the flag was accepted; the disk is just full now
                    os.ftruncate(fd, 0)
                    return fd, True
                os.close(fd)
                os.unlink(path)
                if direct or e.errno not in _NO_DIRECT:
                    raise
    elif direct and not o_direct:
        raise OSError(errno.EOPNOTSUPP, "O_DIRECT is not available on this platform", path)
    return os.open(path, flags, 0o600), False


def pwrite_all(fd: int, buf: memoryview, offset: int, direct: bool) -> None:
    """Write all of ``buf`` at ``offset``; a short write means the disk is full."""
    done = 0
    total = buf.nbytes
    while done < total:
        n = os.pwrite(fd, buf[done:], offset + done)
        # A short O_DIRECT write leaves an unaligned remainder that would only fail with
        # EINVAL; both it and a zero-length write mean the device ran out of space.
        if n <= 0 or (direct and n < total - done):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n


def pwritev_all(fd: int, bufs: list[memoryview], offset: int, direct: bool) -> None:
    """Write the buffers back to back at ``offset`` (one syscall when the kernel takes it all)."""
    if len(bufs) == 1:
        pwrite_all(fd, bufs[0], offset, direct)
        return
    total = sum(b.nbytes for b in bufs)
    n = os.pwritev(fd, bufs, offset)
    if n == total:
        return
    if n <= 0 or direct:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for b in bufs:  # buffered short write: finish piece by piece
        size = b.nbytes
        if n >= size:
            n -= size
        else:
            pwrite_all(fd, b[n:], offset, direct)
            n = 0
        offset += size


def pread_into(fd: int, buf: memoryview, offset: int) -> None:
    """Fill ``buf`` from ``offset``; raise OSError(EIO) if the file ends first."""
    done = 0
    total = buf.nbytes
    while done < total:
        n = os.preadv(fd, [buf[done:]], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, f"spill file ended at {offset + done}, expected {total - done} more bytes")
        done += n
