"""The views of ``frisky observe``: name, API endpoint, one line of help, and renderer."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    name: str
    endpoint: str  # under /api/v1/
    help: str  # one line, for someone who has never seen Frisky
    renderer: str  # "module:function" in frisky.observe, imported when used

    def render_fn(self) -> Callable:
        module, _, fn = self.renderer.partition(":")
        return getattr(importlib.import_module(f"frisky.observe.{module}"), fn)


VIEWS: dict[str, View] = {v.name: v for v in (
    View("overview", "overview",
         "cluster at a glance: tasks, workers, memory, spill, where time went, odd workers",
         "overview:render"),
    View("blocked", "blocked",
         "why tasks wait: missing deps, paused or missing workers, long-running or erred tasks",
         "blocked:render"),
    View("workers", "workers",
         "one row per worker process: status, tasks, memory, spill, network, CPU, running now",
         "workers:render"),
    View("prefixes", "prefixes",
         "progress, compute time, bytes and errors per kind of task (key prefix)",
         "prefixes:render"),
    View("transfers", "transfers",
         "data moving between workers now, and the slowest recent transfers",
         "transfers:render"),
    View("clients", "clients",
         "each connected client: building or uploading a graph, waiting on results, or idle",
         "clients:render"),
    View("timeline", "timeline",
         "seconds spent per second over time, per component or per span type (--view detailed)",
         "timeline:render_timeline"),
    View("spans", "spans",
         "recent timed steps (spans) of one name, with p50/p90/p99: --name worker.exec.call",
         "timeline:render_spans"),
    View("stragglers", "stragglers",
         "workers ranked by time lost against the median worker, and the steps where they lag",
         "stragglers:render"),
)}


def summary(indent: int = 2) -> str:
    """One line per view, for ``--help``."""
    pad = " " * indent
    return "\n".join(f"{pad}{v.name:<11} {v.help}" for v in VIEWS.values())
