"""The worker's decisions: which tasks can run and where, what to fetch from whom, what
to report, whether a result travels inline, how much to spill and when to pause.

No sockets, no threads, no clocks: the worker's loop feeds events in (tasks from the
scheduler, answers from peers, outcomes from the executor) and carries out the named
instructions that come back: those below, and messages for the scheduler
(:class:`~frisky.protocol.Finished`, ``TaskErred``, ``Cancelled``, ``Missing``), which
it sends as they are. Executor threads never read this state; their outcomes
reach it through the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from frisky.protocol import Cancelled, Finished, Missing, TaskErred


class Batch:
    """What the tasks of one ``compute`` message share: small inline dependency values
    (serialized), those already decoded, and the functions' blobs by id."""

    __slots__ = ("inline", "decoded", "fns")

    def __init__(self, inline: dict[str, bytes], fns: dict[bytes, bytes]) -> None:
        self.inline = inline
        self.decoded: dict[str, Any] = {}
        self.fns = fns


class Task(NamedTuple):
    """A task as the worker holds it."""

    tid: int
    key: str
    fid: bytes
    payload: bytes
    deps: list[str] | None
    batch: Batch


# --- instructions (state -> loop) --------------------------------------------------------
class Execute(NamedTuple):
    """Run ``tasks``: on the loop thread itself (``here``) or on the executor threads."""

    tasks: list[Task]
    here: bool


class Fetch(NamedTuple):
    """Ask the peer at ``address`` for ``keys``."""

    address: str
    keys: list[str]


class Keep(NamedTuple):
    """Hold the value of ``key`` just fetched (``nbytes``): queued tasks will read it."""

    key: str
    nbytes: int


class Release(NamedTuple):
    """Drop the fetched values of ``keys``: no queued task reads them any more."""

    keys: list[str]


class Skip(NamedTuple):
    """Tell the executor not to run ``tids`` (cancelled after they were handed to it)."""

    tids: list[int]


class Unskip(NamedTuple):
    """Forget ``Skip`` for ``tids``: they ran before the executor saw it (tids are reused)."""

    tids: list[int]


# --- events from the executor (reported to the loop, fed in by it) ----------------------
class Ran(NamedTuple):
    """``task`` returned: its result is ``blob`` (inline) or kept here (``blob`` None)."""

    task: Task
    nbytes: int
    blob: bytes | None
    seconds: float
    ref: bytes | None = None  # a held result's same-host reference (see dataplane.reference)


class Failed(NamedTuple):
    """``task`` raised."""

    task: Task
    blob: bytes
    traceback: str


class Skipped(NamedTuple):
    """``task`` was cancelled before it started."""

    task: Task


Outcome = Ran | Failed | Skipped


# a function whose last FAST_STREAK calls each took under FAST_SECONDS runs on the loop
# thread, in batches of at most FAST_BATCH, when the executor threads are idle: a handoff
# to a thread and back costs more than such a call, and a batch of them takes a few ms at
# most, so peers and heartbeats wait little (one that turns slow after such a streak still
# blocks the loop that once). Measured costs, not user settings.
FAST_SECONDS = 100e-6
FAST_STREAK = 16
FAST_BATCH = 64

# a request to one peer carries at most 1/REQUEST_SHARE of the bytes allowed in flight, so
# that several are under way at once (measured: 10,000 results of 64 KiB-1 MiB read from a
# peer on the same host)
REQUEST_SHARE = 4

# results of these types always travel inline (serialization cannot fail to be small)
_SMALL = frozenset({int, float, bool, type(None), complex})
# a result estimated under INLINE_FACTOR x inline_threshold is worth serializing to see
# whether it fits inline (estimates are pessimistic for containers)
INLINE_FACTOR = 4


def try_inline(result: Any, estimated: Callable[[Any], int], threshold: int) -> bool:
    """Whether ``result`` may travel inline in ``finished`` (then serialized at once, and
    kept here after all if its bytes come out over the threshold) or is kept here."""
    return type(result) in _SMALL or estimated(result) < threshold * INLINE_FACTOR


class MemoryPlan(NamedTuple):
    """Bytes to spill now, and whether to stop starting tasks."""

    spill: int
    pause: bool


def memory_plan(managed: int, in_flight: int, process: int, limit: int, target: float, spill: float,
                pause: float) -> MemoryPlan:
    """What to do about memory, from the measures and the thresholds (fractions of ``limit``).

    ``managed``: bytes of values held in memory; ``in_flight``: bytes already being spilled;
    ``process``: RSS. Spill the least recently used values over ``target``; RSS over
    ``spill`` says more than the estimates, so free at least the excess; pause over
    ``pause`` — only while something can be freed, else a worker could wait forever.
    """
    want = 0
    if managed - in_flight > target * limit:
        want = managed - in_flight - int(target * limit)
    if process > spill * limit:
        want = max(want, min(managed - in_flight, process - int(target * limit)))
    return MemoryPlan(max(0, want), process > pause * limit and (managed > 0 or in_flight > 0))


def over(held: int, limit: int | None, fraction: float) -> bool:
    """Whether ``held`` bytes of values pass ``fraction`` of ``limit`` (never without a limit).

    Incoming scattered data goes straight to disk over the spill target; a result goes to
    shared memory only under half of it (it is likely to be spilled soon otherwise, and
    copying it into shared memory first would only cost a copy).
    """
    return bool(limit) and held > fraction * limit


class WorkerState:
    """Tasks queued on this worker, their dependencies, and the data fetched from peers."""

    def __init__(self, cap: int = 1 << 62) -> None:
        self.waiting: dict[int, Task] = {}  # tid -> task whose dependencies are being fetched
        self.missing_of: dict[int, set[str]] = {}  # tid -> dep keys not here yet
        self.needed_by: dict[str, set[int]] = {}  # dep key -> tids waiting for it
        self.fetching: dict[str, str] = {}  # dep key -> peer address asked
        self.fetched: set[str] = set()  # dep keys fetched from a peer and held for queued tasks
        self.fetched_refs: dict[str, int] = {}  # dep key (not inline) -> queued tasks that will read it
        self.executing: set[int] = set()  # tids handed to the executor, outcome not yet reported
        self.cancelled: set[int] = set()  # of those, cancelled since
        self.cap = cap  # bytes that may be in flight from peers at once
        self.in_flight = 0
        self.sizes: dict[str, int] = {}  # dep key -> nbytes, while fetching or fetched
        self.fetched_bytes = 0
        self.queued: dict[str, str] = {}  # key -> address, waiting for room in flight (in order)
        self.threaded = 0  # tasks handed to the executor threads, outcome not yet reported
        self.streak: dict[bytes, int] = {}  # fid -> calls in a row that took under FAST_SECONDS

    # ------------------------------------------------------------------ events
    def compute(self, tasks: list[Task], where: dict[str, list], have: Callable[[str], bool],
                viewed: dict[str, int] | None = None) -> list:
        """New tasks from the scheduler; ``where`` maps dep keys held elsewhere to
        ``[address, nbytes, …]``, ``have`` says whether a key is held here, ``viewed`` maps
        the dep keys already viewed through a same-host reference to their nbytes (kept as
        if fetched, unless a fetch of them is under way).
        Returns ``[Keep…, Execute?, Fetch…]``."""
        ready: list[Task] = []
        fetch: dict[str, list[str]] = {}
        keeps: list = []
        for task in tasks:
            deps = task.deps
            if not deps:
                ready.append(task)
                continue
            inline = task.batch.inline
            missing = set()
            refs = self.fetched_refs
            order = []  # the missing keys in the task's order: fetched first come, first asked
            for k in deps:
                if k in inline:
                    continue  # travels with the task: no reference (see _unref)
                refs[k] = refs.get(k, 0) + 1
                if k in self.fetched or have(k) or k in missing:
                    continue
                if viewed and k in viewed and k not in self.fetching:
                    nbytes = viewed[k]
                    self.fetched.add(k)
                    self.sizes[k] = nbytes
                    self.fetched_bytes += nbytes
                    keeps.append(Keep(k, nbytes))
                    continue
                missing.add(k)
                order.append(k)
            if not missing:
                ready.append(task)
                continue
            tid = task.tid
            self.waiting[tid] = task
            self.missing_of[tid] = missing
            for k in order:
                self.needed_by.setdefault(k, set()).add(tid)
                spec = where.get(k)
                if spec is None:
                    continue
                addr, nbytes = spec[0], spec[1]
                asked = self.fetching.get(k)
                if asked == addr:
                    continue
                if asked is not None:
                    # the scheduler says it is elsewhere now (its holder died and it was
                    # recomputed): give up on the old request, whose answer may never come
                    self._abandon(k)
                self.fetching[k] = addr
                self.sizes[k] = nbytes
                self._plan(k, addr, fetch)
        if self.queued and self.in_flight < self.cap:
            # an abandoned request made room (it may have been all that was in flight)
            self._plan_queued(fetch)
        out: list = self._requests(fetch)
        if ready:
            out.insert(0, self._execute(ready))
        return keeps + out if keeps else out

    def got(self, received: Iterable[str], missing: Iterable[str], address: str) -> list:
        """The peer at ``address`` sent the values of ``received`` and lacks ``missing``.
        Returns ``[Keep…, Execute?, Missing…, Release?, Fetch…]``: keep only the values
        listed (a late answer to an abandoned request is ignored)."""
        ready: list[Task] = []
        out: list = []
        report: list = []
        released: list[str] = []
        # only answers to what we are still asking this peer for: not to a request
        # abandoned when the key moved to another worker
        fetching = self.fetching
        for k in received:
            if fetching.get(k) != address:
                continue
            self._settle(k)
            nbytes = self.sizes.get(k, 0)
            if self.fetched_refs.get(k):
                self.fetched.add(k)
                self.fetched_bytes += nbytes
                out.append(Keep(k, nbytes))
            else:
                self.sizes.pop(k, None)
            for tid in self.needed_by.pop(k, ()):
                miss = self.missing_of.get(tid)
                if miss is None:
                    continue
                miss.discard(k)
                if not miss:
                    del self.missing_of[tid]
                    ready.append(self.waiting.pop(tid))
        for k in missing:
            if fetching.get(k) != address:
                continue
            self._settle(k)
            self.sizes.pop(k, None)
            for tid in self.needed_by.pop(k, ()):
                if tid in self.missing_of:
                    self._drop_waiting(tid, released)
                    report.append(Missing(tid, [k]))
        if ready:
            out.append(self._execute(ready))
        out.extend(report)
        if released:
            out.append(Release(released))
        out.extend(self._more_fetches())
        return out

    def peer_lost(self, address: str) -> list:
        """Every fetch from ``address`` failed (it could not be reached)."""
        keys = [k for k, a in self.fetching.items() if a == address]
        return self.got((), keys, address)

    def finished(self, here: list[Outcome], threads: list[Outcome]) -> list:
        """Outcomes from the executor: of tasks run on the loop thread (``here``) and on the
        executor threads. Returns ``[Finished?, TaskErred?, Cancelled?, Release?, Unskip?]``."""
        # per outcome, the worker's hottest path after the call itself: outcomes are
        # unpacked rather than read field by field, and streaks are settled once per batch
        ok_tids: list[int] = []
        ok_nbytes: list[int] = []
        ok_blobs: list = []
        ok_refs: dict[int, bytes] = {}
        err_tids: list[int] = []
        err_blobs: list[bytes] = []
        err_tbs: list[str] = []
        cancelled: list[int] = []
        timings: dict[bytes, list] = {}  # fid -> [fid, calls, seconds]
        reset: dict[bytes, int] = {}  # fid -> its calls here up to its last slow or failed one
        released: list[str] = []
        cancelled_set = self.cancelled
        discard = self.executing.discard
        unskip: list[int] = []
        unref = self._unref
        for outcomes in (here, threads):
            for o in outcomes:
                task = o[0]
                tid = task[0]
                discard(tid)
                if cancelled_set and tid in cancelled_set:
                    cancelled_set.discard(tid)
                    if type(o) is not Skipped:
                        unskip.append(tid)
                if task[4]:
                    unref(task, released)
                kind = type(o)
                if kind is Ran:
                    _, nbytes, blob, seconds, ref = o
                    fid = task[2]
                    ok_tids.append(tid)
                    ok_nbytes.append(nbytes)
                    ok_blobs.append(blob)
                    if ref is not None:
                        ok_refs[tid] = ref
                    t = timings.get(fid)
                    if t is None:
                        t = timings[fid] = [fid, 1, seconds]
                    else:
                        t[1] += 1
                        t[2] += seconds
                    if seconds >= FAST_SECONDS:
                        reset[fid] = t[1]
                elif kind is Failed:
                    fid = task[2]
                    t = timings.get(fid)
                    reset[fid] = t[1] if t is not None else 0
                    err_tids.append(tid)
                    err_blobs.append(o[1])
                    err_tbs.append(o[2])
                else:
                    cancelled.append(tid)
        streak = self.streak
        for fid, at in reset.items():
            streak[fid] = -at  # plus its calls here (below): the calls after the reset
        for fid, t in timings.items():
            streak[fid] = streak.get(fid, 0) + t[1]
        n_threads = len(threads)
        self.threaded -= n_threads
        out: list = []
        if ok_tids:
            out.append(Finished(ok_tids, ok_nbytes, list(timings.values()), ok_blobs, ok_refs or None))
        if err_tids:
            out.append(TaskErred(err_tids, err_tbs, err_blobs))
        if cancelled:
            out.append(Cancelled(cancelled))
        if released:
            out.append(Release(released))
        if unskip:
            out.append(Unskip(unskip))
        return out

    def cancel(self, tids: Iterable[int]) -> list:
        """The scheduler cancels tasks. Those waiting for inputs are dropped here
        (``Cancelled``); those handed to the executor are skipped by it (``Skip``) if not
        started yet, and reported with their outcome; others are not here (already reported)."""
        dropped: list[int] = []
        skip: list[int] = []
        released: list[str] = []
        for tid in tids:
            if tid in self.waiting:
                self._drop_waiting(tid, released)
                dropped.append(tid)
            elif tid in self.executing and tid not in self.cancelled:
                self.cancelled.add(tid)
                skip.append(tid)
        out: list = []
        if dropped:
            out.append(Cancelled(dropped))
        if skip:
            out.append(Skip(skip))
        if released:
            out.append(Release(released))
        if dropped and self.queued and self.in_flight < self.cap:
            out.extend(self._more_fetches())  # an abandoned request made room
        return out

    # ----------------------------------------------------------------- helpers
    def _execute(self, tasks: list[Task]) -> Execute:
        """Where ``tasks`` run: on the loop thread when the executor threads are idle and each
        function's recent calls were all tiny, else on the threads."""
        here = not self.threaded and len(tasks) <= FAST_BATCH
        if here:
            streak = self.streak
            for task in tasks:
                if streak.get(task.fid, 0) < FAST_STREAK:
                    here = False
                    break
        if not here:
            self.threaded += len(tasks)
        executing = self.executing
        for task in tasks:
            executing.add(task.tid)
        return Execute(tasks, here)

    def _drop_waiting(self, tid: int, released: list[str]) -> None:
        """Forget a task waiting for inputs: it will not run here."""
        task = self.waiting.pop(tid)
        for k in self.missing_of.pop(tid):
            s = self.needed_by.get(k)
            if s is not None:
                s.discard(tid)
                if not s:
                    del self.needed_by[k]
                    if k in self.fetching:
                        # nobody here needs it now: forget the request (the scheduler cancels
                        # the dependents of data lost with a dead holder, and may resend them
                        # for a new holder at the same address, which must be asked afresh)
                        self._abandon(k)
                        self.sizes.pop(k, None)
        self._unref(task, released)

    def _abandon(self, key: str) -> None:
        """Forget the request for ``key``: sent (its bytes leave the in-flight count) or queued."""
        self._settle(key)

    def _settle(self, key: str) -> None:
        """The request for ``key`` ends (answered or abandoned)."""
        del self.fetching[key]
        if self.queued.pop(key, None) is None:  # it was sent, not still queued
            self.in_flight -= self.sizes.get(key, 0)

    def _plan(self, key: str, address: str, fetch: dict[str, list[str]]) -> None:
        """Fetch now if it fits in the bytes allowed in flight (one always may), else queue."""
        nbytes = self.sizes.get(key, 0)
        if self.in_flight and self.in_flight + nbytes > self.cap:
            self.queued[key] = address
            return
        self.in_flight += nbytes
        fetch.setdefault(address, []).append(key)

    def _more_fetches(self) -> list[Fetch]:
        """Queued fetches that now fit in flight."""
        if not self.queued:
            return []
        fetch: dict[str, list[str]] = {}
        self._plan_queued(fetch)
        return self._requests(fetch)

    def _plan_queued(self, fetch: dict[str, list[str]]) -> None:
        """Send queued fetches in their order until the next one does not fit: each answer
        costs the keys it lets go, not a pass over everything still queued (a task reading
        ten thousand results would otherwise cost a quadratic number of steps)."""
        queued = self.queued
        sizes = self.sizes
        taken = []
        for key, address in queued.items():
            nbytes = sizes.get(key, 0)
            if self.in_flight and self.in_flight + nbytes > self.cap:
                break
            self.in_flight += nbytes
            fetch.setdefault(address, []).append(key)
            taken.append(key)
        for key in taken:
            del queued[key]

    def _requests(self, fetch: dict[str, list[str]]) -> list[Fetch]:
        """One request per peer, split so that no request carries more than a share of the
        bytes allowed in flight: the peer answers the first while this worker reads the
        answer before it, instead of one exchange at a time."""
        most = self.cap // REQUEST_SHARE
        sizes = self.sizes
        out = []
        for address, keys in fetch.items():
            start, total = 0, 0
            for i, k in enumerate(keys):
                n = sizes.get(k, 0)
                if total and total + n > most:
                    out.append(Fetch(address, keys[start:i]))
                    start, total = i, 0
                total += n
            out.append(Fetch(address, keys[start:] if start else keys))
        return out

    def _unref(self, task: Task, released: list[str]) -> None:
        """``task`` no longer needs its inputs: fetched values nobody else reads go."""
        deps = task.deps
        if not deps:
            return
        refs = self.fetched_refs
        inline = task.batch.inline
        for k in deps:
            if k in inline:
                continue
            n = refs.get(k)
            if n is None:
                continue
            if n <= 1:
                del refs[k]
                if k in self.fetched:
                    self.fetched.discard(k)
                    self.fetched_bytes -= self.sizes.pop(k, 0)
                    released.append(k)
            else:
                refs[k] = n - 1

    # ---------------------------------------------------------------- checking
    def validate(self) -> None:
        """Check every invariant; raise AssertionError naming the first that does not hold."""
        assert self.waiting.keys() == self.missing_of.keys(), "waiting and missing_of disagree"
        for tid, miss in self.missing_of.items():
            assert miss, f"task {tid} waits for nothing"
            assert tid not in self.executing, f"task {tid} both waiting and executing"
            task = self.waiting[tid]
            assert task.tid == tid and task.deps, f"waiting task {tid} has no dependencies"
            for k in miss:
                assert k in task.deps, f"task {tid} waits for {k!r}, not one of its dependencies"
                assert tid in self.needed_by.get(k, ()), f"needed_by[{k!r}] lacks task {tid}"
                assert k not in self.fetched, f"task {tid} waits for {k!r}, which is here"
        for k, tids in self.needed_by.items():
            for tid in tids:
                assert k in self.missing_of.get(tid, ()), f"needed_by[{k!r}] names task {tid}, which does not wait for it"
        queued = self.queued
        for k, a in queued.items():
            assert self.fetching.get(k) == a, f"queued fetch of {k!r} from {a} not being fetched from there"
        flying = sum(self.sizes.get(k, 0) for k in self.fetching if k not in queued)
        assert self.in_flight == flying, f"in_flight {self.in_flight} != {flying} bytes requested"
        assert not (self.fetched & self.fetching.keys()), "a key both fetched and being fetched"
        for k in self.fetched:
            assert self.fetched_refs.get(k, 0) > 0, f"fetched {k!r} held for no task"
        assert self.fetched_bytes == sum(self.sizes.get(k, 0) for k in self.fetched), "fetched_bytes drifted"
        assert all(n > 0 for n in self.fetched_refs.values()), "a reference count at zero"
        assert self.sizes.keys() <= self.fetched | self.fetching.keys(), "sizes kept for keys neither fetched nor being fetched"
        assert self.cancelled <= self.executing, "a cancelled task that is not executing"
        assert 0 <= self.threaded <= len(self.executing), f"{self.threaded} tasks on the executor threads"
