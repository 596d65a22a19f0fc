"""The spill checksum: XXH3 (64-bit) from xxhash over each stored chunk.

XXH3 runs at memory speed and releases the GIL on inputs over 64 KiB, so the spill pool's
threads checksum chunks in parallel with compression and I/O. Every chunk of every spill
file is checked with this one function (``NAME``): a spill file lives only as long as its
worker process, so its chunks never mix two algorithms.
"""

from __future__ import annotations

from typing import Any

import xxhash

NAME = "xxh3-64"


def checksum(buf: Any) -> int:
    """The 64-bit XXH3 checksum of the bytes of ``buf`` (a contiguous byte buffer)."""
    return xxhash.xxh3_64_intdigest(buf)
