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

import itertools
import pickle
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from frisky import config, protocol
from frisky.data.deps import DepRef
from frisky.protocol import wire_key
from frisky.telemetry import now, recorder

if TYPE_CHECKING:  # pragma: no cover
    from frisky.client.client import Client

FIRST_BATCH = 256  # the first tasks leave at once: workers start while the rest converts
BATCH = 8192
_generations = itertools.count(1)  # graphs submitted earlier run first, as in dask.distributed


class GraphBatch:
    """The nodes of one batch of a dask graph: on a worker, the function of its tasks.

    Task ``i`` is called as ``batch(i, *values of its dependencies)``. Nodes are dask
    ``GraphNode``s, or legacy tuples that the worker converts as it runs them.
    """

    __slots__ = ("keys", "nodes", "deps")

    def __init__(self, keys: list, nodes: list, deps: list[tuple]) -> None:
        self.keys = keys
        self.nodes = nodes
        self.deps = deps

    def __reduce__(self):
        return (GraphBatch, (self.keys, self.nodes, self.deps))

    def __call__(self, i: int, *values: Any) -> Any:
        from dask._task_spec import GraphNode, convert_legacy_task

        deps = self.deps[i]
        node = self.nodes[i]
        if not isinstance(node, GraphNode):
            node = convert_legacy_task(self.keys[i], node, frozenset(deps))
            if not isinstance(node, GraphNode):
                return node  # a literal value
        return node(dict(zip(deps, values)) if deps else {})


# ---------------------------------------------------------------- the graph
def raw_graph(dsk: Any) -> tuple[dict, dict]:
    """A dict of the graph's nodes (dask ``GraphNode``s or legacy tuples, as given) from an
    expression, a high-level graph or a dict, and the annotations the expression carries
    (``{kind: {key: value}}``)."""
    annotations: dict = {}
    if not isinstance(dsk, Mapping) and hasattr(dsk, "__dask_graph__"):  # an expression
        unculled = _delayed_graph(dsk)
        if unculled is not None:
            return unculled
        annotations = dict(dsk.__dask_annotations__() or {})
        dsk = dsk.__dask_graph__()
    if not isinstance(dsk, dict):
        dsk = dict(dsk)
    return dsk, annotations


def _delayed_graph(expr: Any) -> tuple[dict, dict] | None:
    """The graph of an expression of ``dask.delayed`` objects as built, skipping dask's
    low-level optimizer when all it would do is cull: a pass over every task's
    dependencies (seconds for a million tasks) before the first one could leave, where
    the walk from the output keys culls anyway, streaming. None for anything else."""
    import dask
    from dask._expr import HLGExpr, _HLGExprSequence
    from dask.delayed import optimize
    from dask.highlevelgraph import HighLevelGraph

    ops = expr.operands if type(expr) is _HLGExprSequence else [expr]
    if dask.config.get("optimization.fuse.delayed") or not all(
            type(o) is HLGExpr and o.low_level_optimizer is optimize for o in ops):
        return None
    hlg = HighLevelGraph.merge(*[o.hlg for o in ops])
    annotations: dict = {}
    for layer in hlg.layers.values():  # as ``HLGExpr.__dask_annotations__`` reads them
        for kind, value in (layer.annotations or {}).items():
            annotations.setdefault(kind, {}).update((k, value(k) if callable(value) else value) for k in layer)
    graph: dict = {}
    for layer in hlg.layers.values():
        graph.update(layer)
    return graph, annotations


def cull(dsk: dict, keys) -> dict:
    """The part of ``dsk`` (of ``GraphNode``s) that ``keys`` need; keys outside ``dsk``
    are data the cluster already holds (futures)."""
    out: dict = {}
    work = list(keys)
    while work:
        k = work.pop()
        if k in out or k not in dsk:
            continue
        node = out[k] = dsk[k]
        work.extend(node.dependencies)
    return out


def legacy_deps(task: Any, graph: Mapping, out: list) -> list:
    """Append to ``out`` the keys of ``graph`` (and of futures) that a legacy task refers
    to, as ``convert_legacy_task`` finds them, without building task objects: a worker
    does that, in parallel."""
    t = type(task)
    if t is tuple and task and callable(task[0]):
        for a in task[1:]:
            ta = type(a)
            if ta is str or ta is int or ta is float:  # the common case, inline
                if a in graph:
                    out.append(a)
            elif ta is not dict:
                legacy_deps(a, graph, out)
        return out
    if t is str or t is int or t is float or t is tuple:
        try:
            if task in graph:
                out.append(task)
                return out
        except TypeError:  # unhashable inside a tuple
            pass
    if t is tuple or t is list or t is set or t is frozenset:
        for a in task:
            legacy_deps(a, graph, out)
    elif getattr(task, "__dask_future__", False):
        out.append(_FutureRef(task.key))
    return out


class _FutureRef:
    """A future met inside a legacy task: its key is a dependency held on the cluster."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key


def _GraphNode() -> type:
    from dask._task_spec import GraphNode

    return GraphNode


class _Walk:
    """Per key of the graph: its dependencies and its wire key, found once."""

    def __init__(self, graph: dict) -> None:
        self.graph = graph
        self.deps: dict = {}
        self.nodes: dict = {}  # nodes converted here (those holding futures)

    def visit(self, k: Any) -> tuple:
        node = self.graph[k]
        if type(node) is tuple and node and callable(node[0]):
            # the common legacy task ``(f, *args)``, its first level inline: a call here
            # costs as much as the rest of a task's conversion
            graph = self.graph
            found: Any = []
            for a in node[1:]:
                ta = type(a)
                if ta is str or ta is int or ta is float:
                    if a in graph:
                        found.append(a)
                elif ta is tuple:
                    try:
                        if a in graph:
                            found.append(a)
                            continue
                    except TypeError:  # unhashable inside: not a key
                        pass
                    legacy_deps(a, graph, found)
                elif ta is not dict:
                    legacy_deps(a, graph, found)
        elif isinstance(node, _GraphNode()):
            found = node.dependencies
        else:
            found = legacy_deps(node, self.graph, [])
        if found and type(found) is list and _FutureRef in map(type, found):
            from dask._task_spec import convert_legacy_task

            node = self.nodes[k] = convert_legacy_task(k, node, self.graph)
            found = node.dependencies
        d = self.deps[k] = tuple(dict.fromkeys(found)) if len(found) > 1 else tuple(found)
        return d

    def depth_first(self, keys: list) -> Iterator:
        """The keys that ``keys`` need, each after its dependencies, depth first (the
        order one thread would run them in, which keeps a reduction's live results few),
        yielded as they are found so the first tasks leave before the graph is read."""
        graph, seen, visit = self.graph, self.deps, self.visit
        for root in keys:
            if root in seen or root not in graph:
                continue
            stack = [(root, iter(visit(root)))]
            while stack:
                k, it = stack[-1]
                for d in it:
                    if d not in seen and d in graph:
                        stack.append((d, iter(visit(d))))
                        break
                else:
                    stack.pop()
                    yield k


_REF = b"\x8c\x10frisky.data.deps\x94\x8c\x06DepRef\x94\x93\x94"  # STACK_GLOBAL, memo 0-2


def payload(j: int, wdeps: list[str] | None) -> bytes:
    """``pickle.dumps((j, *map(DepRef, wdeps)), 5)``, written directly: pickling calls
    ``DepRef.__reduce__`` in Python once a dependency, 2 of the 3 µs a task costs here."""
    if not wdeps:
        return _INDEX[j] if j < len(_INDEX) else pickle.dumps((j,), protocol=5)
    out = [b"\x80\x05(", _int(j), _REF]
    first = True
    for w in wdeps:
        b = w.encode()
        if not first:
            out.append(b"h\x02")  # BINGET 2: the DepRef class again
        first = False
        out.append((b"\x8c" + bytes((len(b),)) if len(b) < 256 else b"X" + len(b).to_bytes(4, "little")) + b)
        out.append(b"\x85R")  # TUPLE1, REDUCE
    out.append(b"t.")
    return b"".join(out)


def _int(j: int) -> bytes:
    if j < 256:
        return b"K" + bytes((j,))
    if j < 65536:
        return b"M" + j.to_bytes(2, "little")
    return b"J" + j.to_bytes(4, "little", signed=True)


_INDEX = [pickle.dumps((j,), protocol=5) for j in range(8192)]
# a task's payload with dependencies: its head by index in the batch (< BATCH), then one
# pickled ``DepRef(key)`` per dependency (see :func:`payload`)
_HEAD = [b"\x80\x05(" + _int(j) + _REF for j in range(8192)]
_SHORT = [b"\x8c" + bytes((n,)) for n in range(256)]


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
                 priority: int = 0, order_limit: int | None = None) -> dict:
    """Submit the part of graph ``dsk`` that ``keys`` need; returns ``{key: Future}``.

    Up to ``dask_order_limit`` nodes, tasks follow ``dask.order``; a larger graph would
    spend longer in it than in running, so it streams out depth first as it is read.
    Annotations (``dask.annotate(workers=..., retries=..., priority=...)``) override the
    keyword arguments for the tasks they cover.
    """
    import dask

    client._check_open()
    t0 = now()
    graph, annotations = raw_graph(dsk)
    n = len(graph)
    client._activity("building", 0, n, f"dask graph of {n} tasks", force=True)
    futures = {k: client._future(k, wire_key(k))[0] for k in keys}
    exact = n <= config.get("dask_order_limit", order_limit)
    if exact:
        import dask.order
        from dask._task_spec import convert_legacy_graph

        graph = cull(convert_legacy_graph(graph), keys)
        if not graph:
            client._activity("idle", force=True)
            return futures
        walk = _Walk(graph)
        for k, node in graph.items():
            walk.deps[k] = tuple(node.dependencies)
        order = dask.order.order(graph)
        seq: Any = sorted(graph, key=order.__getitem__)
    else:
        walk = _Walk(graph)
        seq = walk.depth_first(keys)
    up = _Upload(client, walk, keys, annotations, dask.get_annotations(), workers, retries, priority)
    if exact:
        up.release_after_last_dependent(seq)
    recorder.span("client.graph.build", t0, "", None, n)
    try:
        up.run(seq, n)
    finally:
        client._activity("idle", force=True)
    return futures


class _Upload:
    """Sends an ordered graph as ``submit`` messages, a batch at a time."""

    def __init__(self, client: Client, walk: _Walk, keys: list, annotations: dict, glob: dict,
                 workers: Any, retries: int, priority: int) -> None:
        self.client = client
        self.walk = walk
        self.deps_of = walk.deps
        self.wkeys: dict = {}
        self.wanted = set(keys)
        self.ann = (annotations.get("workers", {}), annotations.get("retries", {}),
                    annotations.get("priority", {}))
        self.glob = (glob.get("workers"), glob.get("retries"), glob.get("priority"))
        self.annotated = any(self.ann) or any(v is not None for v in self.glob)
        self.defaults = (workers, retries, priority)
        self.base = -(next(_generations) << 32)  # earlier graphs first; within one, this order
        self.release_at: dict[int, list[str]] | None = None  # position -> keys free after it
        self.released: list[str] = []

    def release_after_last_dependent(self, seq: list) -> None:
        """Release each intermediate key in the message after its last dependent's, so its
        data goes as soon as nothing needs it (needs the whole order up front)."""
        last: dict = {}
        deps_of = self.deps_of
        for i, k in enumerate(seq):
            for d in deps_of[k]:
                last[d] = i
        existing = self.client._futures
        at: dict[int, list[str]] = {}
        for k, i in last.items():
            if k not in self.wanted:
                wk = wire_key(k)
                if wk not in existing:  # a key the user also holds a future of stays wanted
                    at.setdefault(i, []).append(wk)
        self.release_at = at

    def run(self, seq, total: int = 0) -> None:
        """Send ``seq`` (``total`` nodes, for the dashboard's progress) in batches."""
        it = iter(seq)
        pos = 0
        size = FIRST_BATCH
        client = self.client
        while True:
            t0 = now()
            chunk = list(itertools.islice(it, size))
            if not chunk:
                break
            self._batch(chunk, pos)
            pos += len(chunk)
            size = BATCH
            recorder.span("client.submit", t0, "", None, len(chunk))
            client._activity("uploading", pos, max(total, pos), f"dask graph of {max(total, pos)} tasks")
        if self.release_at is None:  # streamed: every dependent is known only now
            existing = self.client._futures
            wkeys = self.wkeys
            self.released = [wkeys[k] for k in self.deps_of if k not in self.wanted and wkeys[k] not in existing]
        released = self.released
        for i in range(0, len(released), BATCH):  # bounded messages: the scheduler stays responsive
            self.client._send_frames(protocol.Release(released[i:i + BATCH]).encode())

    def _batch(self, chunk: list, start: int) -> None:
        client = self.client
        codec = client.codec
        graph, converted, deps_of, wkeys = self.walk.graph, self.walk.nodes, self.deps_of, self.wkeys
        nodes = list(map(graph.__getitem__, chunk))
        if converted:
            nodes = [converted.get(k, n) for k, n in zip(chunk, nodes)]
        deps = list(map(deps_of.__getitem__, chunk))
        batch = GraphBatch(chunk, nodes, deps)
        if codec.local:
            fblob = fid = codec.dumps_function(batch)
        else:
            fblob = _dumps(batch)
            fid = protocol.function_id(fblob)
            if not self.annotated:
                self._send_plain(chunk, deps, fid, fblob, start)
                self._released_after(start, len(chunk))
                return
        ann_workers, ann_retries, ann_priority = self.ann
        g_workers, g_retries, g_priority = self.glob
        workers, retries, priority = self.defaults
        dumps = codec.dumps_args if codec.local else None
        prio = self.base + 0xFFFFFFFF - start + (int(priority or 0) << 48)
        restrict = _restriction(workers)
        r = int(retries or 0)
        run: list = []  # consecutive tasks with one restriction go in one message
        run_workers = restrict
        for j, (k, d) in enumerate(zip(chunk, deps)):
            wk = wkeys.get(k)
            if wk is None:
                wk = wkeys[k] = wire_key(k)
            if d:
                wdeps = []
                for x in d:
                    wx = wkeys.get(x)
                    if wx is None:
                        wx = wkeys[x] = wire_key(x)
                    wdeps.append(wx)
                payload_ = dumps((j, *map(DepRef, wdeps)), None) if dumps else payload(j, wdeps)
            else:
                wdeps = None
                payload_ = dumps((j,), None) if dumps else payload(j, None)
            if self.annotated:
                w = ann_workers.get(k, _option(g_workers, k) if g_workers is not None else workers)
                r = int(ann_retries.get(k, _option(g_retries, k) if g_retries is not None else retries) or 0)
                p = ann_priority.get(k, _option(g_priority, k) if g_priority is not None else priority)
                w = _restriction(w)
                if run and w != run_workers:
                    self._send(run, fid, fblob, run_workers)
                    run = []
                run_workers = w
                run.append((wk, payload_, wdeps, r, self.base + 0xFFFFFFFF - start - j + (int(p or 0) << 48)))
            else:
                run.append((wk, payload_, wdeps, r, prio - j))
        if run:
            self._send(run, fid, fblob, run_workers)
        self._released_after(start, len(chunk))

    def _released_after(self, start: int, n: int) -> None:
        if self.release_at:
            for i in range(start, start + n):
                done = self.release_at.get(i)
                if done:
                    self.released.extend(done)

    def _send_plain(self, chunk: list, deps: list, fid: bytes, fblob: bytes, start: int) -> None:
        """One ``submit`` for a batch without annotations, its columns built in one pass
        (the loop every task of a large graph goes through: kept to a few µs a task)."""
        wkeys = self.wkeys
        get = wkeys.get
        keys: list = []
        wdeps_all: list = []
        payloads: list = []
        short = _SHORT
        for j, k in enumerate(chunk):
            wk = get(k)
            if wk is None:
                wk = wkeys[k] = k if type(k) is str else str(k)
            keys.append(wk)
            d = deps[j]
            if not d:
                wdeps_all.append(None)
                payloads.append(_INDEX[j])
                continue
            wdeps = []
            refs = []
            for x in d:
                wx = get(x)
                if wx is None:
                    wx = wkeys[x] = x if type(x) is str else str(x)
                wdeps.append(wx)
                b = wx.encode()
                refs.append(short[len(b)] + b if len(b) < 256 else b"X" + len(b).to_bytes(4, "little") + b)
            wdeps_all.append(wdeps)
            # pickle.dumps((j, *map(DepRef, wdeps)), 5), as :func:`payload` writes it
            payloads.append(_HEAD[j] + b"\x85Rh\x02".join(refs) + b"\x85Rt.")
        workers, retries, priority = self.defaults
        prio = self.base + 0xFFFFFFFF - start + (int(priority or 0) << 48)
        released, self.released = self.released, []
        self.client._send_frames(protocol.Submit(
            keys=keys, fidx=0, fids=[fid], deps=wdeps_all if any(wdeps_all) else None,
            retries=int(retries or 0), priority=list(range(prio, prio - len(keys), -1)),
            workers=_restriction(workers), track=False, released=released or None, payloads=payloads,
            fn_blobs=[fblob],
        ).encode())

    def _send(self, run: list, fid: bytes, fblob: bytes, workers) -> None:
        released, self.released = self.released, []
        deps = [t[2] for t in run]
        retries = [t[3] for t in run]
        self.client._send_frames(protocol.Submit(
            keys=[t[0] for t in run], fidx=0, fids=[fid], deps=deps if any(deps) else None,
            retries=retries if any(retries) else 0, priority=[t[4] for t in run], workers=workers,
            track=False, released=released or None, payloads=[t[1] for t in run], fn_blobs=[fblob],
        ).encode())


def _restriction(w: Any) -> list[str] | None:
    if w is None:
        return None
    if isinstance(w, str):
        return [w]
    return sorted(str(x) for x in w)


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
        optimize_graph = optimize_graph and _worth_optimizing(variables)
        expr = FinalizeCompute(collections_to_expr(variables, optimize_graph, **kwargs)).optimize()
        names = list(flatten(expr.__dask_keys__()))
        by_key = submit_graph(client, expr, names, workers=workers, retries=retries, priority=priority)
    it = iter(names)
    out = [by_key[next(it)] if dask.is_dask_collection(a) else a for a in collections]
    if sync:
        out = client.gather(out)
    return out[0] if singleton else out


def _worth_optimizing(collections: list) -> bool:
    """False when dask's optimization would only cull the graph, which the upload does
    anyway as it walks it (on a million-task delayed graph, dask's cull takes longer than
    running it here)."""
    import dask
    from dask.delayed import Delayed

    return not (all(type(c) is Delayed for c in collections)
                and not dask.config.get("optimization.fuse.delayed", False))


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
    optimize_graph = optimize_graph and _worth_optimizing(collections)
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
