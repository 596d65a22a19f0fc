"""Workers keep allocations up to a streamed chunk in glibc's heap, and larger ones in mappings."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

import frisky
from frisky.data import compression
from frisky.deploy.malloc_tuning import MMAP_THRESHOLD

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

CHUNK = compression.STREAM_CHUNK + 64  # a streamed chunk, as ZeroMQ allocates it with its header


def malloc_is_mmapped(n: int) -> bool:
    """Whether ``malloc(n)`` here gets a mapping of its own (glibc's IS_MMAPPED chunk bit)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    p = libc.malloc(n)
    try:
        return bool(ctypes.c_size_t.from_address(p - ctypes.sizeof(ctypes.c_size_t)).value & 2)
    finally:
        libc.free(p)


def test_threshold_sits_just_above_a_streamed_chunk():
    assert compression.STREAM_CHUNK < CHUNK < MMAP_THRESHOLD <= 2 * compression.STREAM_CHUNK


@pytest.mark.timeout(60)
def test_local_cluster_workers_receive_chunks_into_the_heap():
    with frisky.LocalCluster(n_workers=1) as c, c.get_client() as cl:
        assert cl.submit(malloc_is_mmapped, CHUNK, pure=False).result(timeout=30) is False
        assert cl.submit(malloc_is_mmapped, 2 * MMAP_THRESHOLD, pure=False).result(timeout=30) is True
