"""Spans and counters: cheap to record, aggregated for the dashboard and ``observe``.

Recording a span costs two ``perf_counter_ns`` calls and one deque append::

    t0 = now()
    ...
    span("worker.exec.call", t0, prefix="inc")
"""

from frisky.telemetry.recorder import Recorder, count, now, recorder, span

__all__ = ["Recorder", "count", "now", "recorder", "span"]
