"""Task states of the scheduler, as small ints (the state machine's columns hold these)."""

from __future__ import annotations

WAITING, QUEUED, PROCESSING, MEMORY, ERRED, RELEASED, FORGOTTEN = range(7)
STATE_NAMES = ("waiting", "queued", "processing", "memory", "erred", "released", "forgotten")
_ACTIVE = (WAITING, QUEUED, PROCESSING)
