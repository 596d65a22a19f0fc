"""Loggers per area, and the one rate-limited report of messages dropped at a boundary."""

from __future__ import annotations

import logging
import time
from collections import Counter


def logger(area: str) -> logging.Logger:
    """``frisky.<area>``'s logger (scheduler, worker, client, zmq …)."""
    return logging.getLogger("frisky." + area)


class Dropped:
    """Counts messages dropped at a boundary and logs them, at most one line per ``interval``.

    Each line carries the time, the peer, the op and why; lines held back meanwhile are
    counted and summed up in the next line, so a flood of garbage costs a few lines.
    """

    def __init__(self, log: logging.Logger, what: str = "message", interval: float = 5.0) -> None:
        self.log = log
        self.what = what
        self.interval = interval
        self.count = 0
        self.by_op: Counter = Counter()
        self._next = 0.0
        self._held = 0

    def __call__(self, peer: object, op: object, why: str, exc_info: BaseException | None = None) -> None:
        """Record one dropped message from ``peer``."""
        self.count += 1
        self.by_op[op if isinstance(op, str) else None] += 1
        t = time.monotonic()
        if t < self._next:
            self._held += 1
            return
        self._next = t + self.interval
        held, self._held = self._held, 0
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        more = f" ({held} more dropped since the last report)" if held else ""
        self.log.warning("%s dropped a %s from %s: op %.40r: %s%s", stamp, self.what, peer, op, why, more,
                         exc_info=exc_info)
