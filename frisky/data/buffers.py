"""Raw views of buffers for the C code paths (compression, spill, shared memory)."""

from __future__ import annotations

import sys
from typing import Any


def byte_view(buf: Any) -> memoryview:
    """A flat, C-contiguous ``'B'`` memoryview of ``buf`` (copies only non-contiguous data)."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(buf, np.ndarray):
        # via numpy, so dtypes memoryview cannot express (datetime64, structured …) work too;
        # ascontiguousarray also turns subclasses (np.matrix) into plain 1-d-capable arrays
        return memoryview(np.ascontiguousarray(buf).reshape(-1).view(np.uint8))
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    if mv.c_contiguous:
        if mv.format == "B" and mv.ndim == 1:
            return mv
        try:
            return mv.cast("B")
        except TypeError:  # a format cast() refuses: fall through to a copy
            pass
    return memoryview(mv.tobytes())


def address(buf: Any) -> tuple[Any, int, int]:
    """(numpy view keeping ``buf`` alive, address, nbytes) of a contiguous byte buffer."""
    import numpy as np

    a = np.frombuffer(buf, np.uint8)
    return a, a.ctypes.data, a.nbytes
