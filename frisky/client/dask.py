"""Dask's scheduler interface on a Frisky :class:`~frisky.client.client.Client`.

``client.get(dsk, keys)`` runs a dask graph (an expression, a high-level graph or a
plain dict, in dask's task spec or legacy tuples) as Frisky tasks; ``compute`` and
``persist`` return futures and future-backed collections. Imported only when used:
Frisky runs without dask.

How a graph travels. Nodes are ordered by ``dask.order`` (its priorities become
Frisky's, so big reductions stay small in memory) and cut into batches. A batch's
nodes are pickled together, once, as the batch's *function*: pickle's memo shares the
functions, dtypes and key strings that nodes repeat (about 100 bytes a node, against
2 KiB pickled alone), and a worker receives a batch once however many of its tasks it
runs. A task's payload is only its index in the batch and references to its
dependencies, which the worker replaces by their values as it does for futures in
arguments. The scheduler sees keys, dependencies and opaque bytes, nothing else.
Intermediate keys are released as soon as all their dependents are submitted, so
their data goes once nothing needs it.
"""

from __future__ import annotations

import hashlib
import itertools
import pickle
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from frisky import protocol
from frisky.data.deps import DepRef
from frisky.protocol import pack, wire_key

if TYPE_CHECKING:  # pragma: no cover
    from frisky.client.client import Client

FIRST_BATCH = 256  # the first tasks leave at once: workers start while the rest converts
BATCH = 8192
_generations = itertools.count(1)  # graphs submitted earlier run first, as in dask.distributed


class GraphBatch:
    """The nodes of one batch of a dask graph: on a worker, the function of its tasks.

    Task ``i`` is called as ``batch(i, *values of its dependencies)``.
    """

    __slots__ = ("nodes", "deps")

    def __init__(self, nodes: list, deps: list[tuple]) -> None:
        self.nodes = nodes
        self.deps = deps

    def __reduce__(self):
        return (GraphBatch, (self.nodes, self.deps))

    def __call__(self, i: int, *values: Any) -> Any:
        deps = self.deps[i]
        return self.nodes[i](dict(zip(deps, values)) if deps else {})


# ---------------------------------------------------------------- the graph
def materialize(dsk: Any) -> tuple[dict, dict]:
    """A graph of dask ``GraphNode``s from an expression, a high-level graph or a dict,
    with the annotations the expression carries (``{kind: {key: value}}``)."""
    from dask._task_spec import convert_legacy_graph

    annotations: dict = {}
    if not isinstance(dsk, Mapping) and hasattr(dsk, "__dask_graph__"):  # an expression
        annotations = dict(dsk.__dask_annotations__() or {})
        dsk = dsk.__dask_graph__()
    if not isinstance(dsk, dict):
        dsk = dict(dsk)
    return convert_legacy_graph(dsk), annotations


def cull(dsk: dict, keys) -> dict:
    """The part of ``dsk`` that ``keys`` need; keys outside ``dsk`` are data the
    cluster already holds (futures)."""
    out: dict = {}
    work = list(keys)
    while work:
        k = work.pop()
        if k in out or k not in dsk:
            continue
        node = out[k] = dsk[k]
        work.extend(node.dependencies)
    return out


def _dumps(obj: Any) -> bytes:
    """Plain pickle where it suffices (3x faster than cloudpickle on a batch); cloudpickle
    for what a worker cannot import by name: lambdas, and whatever lives in ``__main__``."""
    try:
        blob = pickle.dumps(obj, protocol=5)
        if b"__main__" not in blob:
            return blob
    except (pickle.PicklingError, AttributeError, TypeError):
        pass  # e.g. a lambda or a local function: cloudpickle pickles those by value
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=5)


def _option(value: Any, key: Any) -> Any:
    return value(key) if callable(value) else value


def submit_graph(client: Client, dsk: Any, keys: list, *, workers: Any = None, retries: int = 0,
                 priority: int = 0) -> dict:
    """Submit the part of graph ``dsk`` that ``keys`` need; returns ``{key: Future}``.

    Annotations (``dask.annotate(workers=..., retries=..., priority=...)``) override the
    keyword arguments for the tasks they cover.
    """
    import dask
    import dask.order

    client._check_open()
    graph, annotations = materialize(dsk)
    graph = cull(graph, keys)
    futures = {k: client._future(k, wire_key(k))[0] for k in keys}
    if not graph:
        return futures
    order = dask.order.order(graph)
    seq = sorted(graph, key=order.__getitem__)
    glob = dask.get_annotations()
    ann_workers = annotations.get("workers", {})
    ann_retries = annotations.get("retries", {})
    ann_priority = annotations.get("priority", {})
    g_workers, g_retries, g_priority = glob.get("workers"), glob.get("retries"), glob.get("priority")
    annotated = bool(ann_workers or ann_retries or ann_priority or g_workers or g_retries or g_priority)
    base = -(next(_generations) << 32)  # earlier graphs first; within one, dask's order
    wanted = set(keys)
    # each intermediate key is released once its last dependent has been sent
    pos = {k: i for i, k in enumerate(seq)}
    last: dict = {}
    for i, k in enumerate(seq):
        for d in graph[k].dependencies:
            if d in pos:
                last[d] = i
    existing = client._futures
    release_at: dict[int, list[str]] = {}
    for k, i in last.items():
        if k not in wanted:
            wk = wire_key(k)
            if wk not in existing:  # a key the user also holds a future for stays wanted
                release_at.setdefault(i, []).append(wk)
    codec = client.codec
    start = 0
    size = FIRST_BATCH
    pending_release: list[str] = []
    while start < len(seq):
        chunk = seq[start:start + size]
        nodes = [graph[k] for k in chunk]
        deps = [tuple(n.dependencies) for n in nodes]
        batch = GraphBatch(nodes, deps)
        if codec.local:
            fblob = codec.dumps_function(batch)
            fid = fblob
        else:
            fblob = _dumps(batch)
            fid = hashlib.blake2b(fblob, digest_size=16).digest()
        run: list = []  # consecutive tasks with the same restriction go in one message
        run_workers = None
        for j, (k, d) in enumerate(zip(chunk, deps)):
            wdeps = [wire_key(x) for x in d] if d else None
            args = (j, *map(DepRef, wdeps)) if wdeps else (j,)
            payload = codec.dumps_args(args, None) if codec.local else pickle.dumps(args, protocol=5)
            prio = base + 0xFFFFFFFF - (start + j)
            r = retries
            w = workers
            if annotated:
                w = ann_workers.get(k, _option(g_workers, k) if g_workers is not None else w)
                r = ann_retries.get(k, _option(g_retries, k) if g_retries is not None else r)
                p = ann_priority.get(k, _option(g_priority, k) if g_priority is not None else priority)
                prio += int(p or 0) << 48
            else:
                prio += priority << 48
            w = _restriction(w)
            if run and w != run_workers:
                _send(client, run, fid, fblob, run_workers, pending_release)
                pending_release = []
                run = []
            run_workers = w
            run.append((wire_key(k), payload, wdeps, int(r or 0), prio))
        if run:
            _send(client, run, fid, fblob, run_workers, pending_release)
        pending_release = []
        for i in range(start, start + len(chunk)):
            done = release_at.get(i)
            if done:
                pending_release.extend(done)
        start += len(chunk)
        size = BATCH
    if pending_release:
        client._send_frames([protocol.header(protocol.RELEASE, pending_release)])
    return futures


def _restriction(w: Any) -> list[str] | None:
    if w is None:
        return None
    if isinstance(w, str):
        return [w]
    return sorted(str(x) for x in w)


def _send(client: Client, run: list, fid: bytes, fblob: bytes, workers, released: list[str]) -> None:
    keys = [t[0] for t in run]
    payloads = [t[1] for t in run]
    deps = [t[2] for t in run]
    retries = [t[3] for t in run]
    prios = [t[4] for t in run]
    client._send_frames([
        protocol.header(protocol.SUBMIT, keys, 0, [fid], deps if any(deps) else None,
                        retries if any(retries) else 0, prios, workers, False, released or None),
        pack(payloads), fblob,
    ])


# ------------------------------------------------------------ the entry points
def get(client: Client, dsk: Any, keys: Any, *, workers: Any = None, retries: int = 0,
        priority: int = 0, **kwargs) -> Any:
    """Dask's scheduler ``get``: the results of ``keys`` (nested lists of keys) in ``dsk``."""
    from dask.core import flatten

    flat = list(flatten([keys])) if isinstance(keys, list) else [keys]
    futures = submit_graph(client, dsk, flat, workers=workers, retries=retries, priority=priority)
    results = dict(zip(flat, client.gather([futures[k] for k in flat])))
    return _pack(keys, results)


def _pack(keys: Any, results: dict) -> Any:
    if isinstance(keys, list):
        return [_pack(k, results) for k in keys]
    return results[keys]


def compute(client: Client, collections: Any, *, sync: bool = False, optimize_graph: bool = True,
            workers: Any = None, retries: int = 0, priority: int = 0, traverse: bool = True,
            **kwargs) -> Any:
    """Futures for dask collections (values with ``sync=True``); other arguments pass through."""
    import dask
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr
    from dask.core import flatten

    singleton = not isinstance(collections, (list, tuple, set, frozenset))
    if singleton:
        collections = [collections]
    if traverse:
        collections = [dask.delayed(a) if isinstance(a, (list, set, tuple, dict, Iterator)) else a
                       for a in collections]
    variables = [a for a in collections if dask.is_dask_collection(a)]
    by_key: dict = {}
    names: list = []
    if variables:
        expr = FinalizeCompute(collections_to_expr(variables, optimize_graph, **kwargs)).optimize()
        names = list(flatten(expr.__dask_keys__()))
        by_key = submit_graph(client, expr, names, workers=workers, retries=retries, priority=priority)
    it = iter(names)
    out = [by_key[next(it)] if dask.is_dask_collection(a) else a for a in collections]
    if sync:
        out = client.gather(out)
    return out[0] if singleton else out


def persist(client: Client, collections: Any, *, optimize_graph: bool = True, workers: Any = None,
            retries: int = 0, priority: int = 0, **kwargs) -> Any:
    """The same collections, computed on the cluster in the background and backed by futures."""
    import dask
    from dask.base import collections_to_expr
    from dask.core import flatten

    singleton = not isinstance(collections, (list, tuple, set, frozenset))
    if singleton:
        collections = [collections]
    if not all(map(dask.is_dask_collection, collections)):
        raise TypeError("persist() takes dask collections")
    expr = collections_to_expr(collections, optimize_graph).optimize()
    keys = expr.__dask_keys__()
    futures = submit_graph(client, expr, list(flatten(keys)), workers=workers, retries=retries,
                           priority=priority)
    out = []
    for c, ks in zip(collections, keys):
        func, args = c.__dask_postpersist__()
        out.append(func({k: futures[k] for k in flatten(ks)}, *args))
    return out[0] if singleton else out


# ------------------------------------------------------ the default scheduler
def set_as_default(client: Client) -> None:
    """Make ``client`` dask's scheduler until it closes (now if dask is imported, else on
    dask's first import: Frisky does not import dask for users who do not use it)."""
    if "dask" in sys.modules and hasattr(sys.modules["dask"], "config"):
        _set(client)
    else:
        _hook.clients.append(client)
        if _hook not in sys.meta_path:
            sys.meta_path.insert(0, _hook)


def unset_default(client: Client) -> None:
    """Undo :func:`set_as_default` when ``client`` closes."""
    if client in _hook.clients:
        _hook.clients.remove(client)
    ctx = getattr(client, "_dask_config", None)
    if ctx is not None:
        client._dask_config = None
        try:
            ctx.__exit__(None, None, None)
        except Exception:  # noqa: BLE001 - another config change may have replaced ours
            import dask

            if dask.config.get("scheduler", None) is client:
                dask.config.set({"scheduler": None, "dataframe.shuffle.method": None})


def _set(client: Client) -> None:
    import dask

    if not client._closed:
        # a task-based shuffle, as dask.distributed sets: dask's default for a local
        # scheduler shuffles through files that only one process can see
        client._dask_config = dask.config.set({"scheduler": client, "dataframe.shuffle.method": "tasks"})


class _DaskImportHook:
    """Sets the waiting clients as dask's scheduler once ``dask`` has been imported."""

    def __init__(self) -> None:
        self.clients: list = []

    def find_spec(self, name, path=None, target=None):
        if name != "dask":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec("dask")
        finally:
            if self.clients:
                sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        hook = self

        class _Loader:
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                if hook in sys.meta_path:
                    sys.meta_path.remove(hook)
                clients, hook.clients = hook.clients, []
                for c in clients:
                    _set(c)

        spec.loader = _Loader()
        return spec


_hook = _DaskImportHook()
