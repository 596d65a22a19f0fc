"""Spilling values to disk: one pipelined, O_DIRECT spill file per worker.

    sf = SpillFile(name="worker-1")
    sf.put("x-1", frames, on_done=lambda key, err: ...)   # returns at once
    frames = sf.get("x-1")                                # verified, decompressed
    frames = sf.map_frames("x-1")                         # the same, raw frames mapped from the file
    sf.close()                                            # removes the file and its directory
"""

from frisky.spill.errors import ChecksumError, SpillError
from frisky.spill.file import SpillFile
from frisky.spill.sweep import sweep

__all__ = ["ChecksumError", "SpillError", "SpillFile", "sweep"]
