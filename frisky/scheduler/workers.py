"""Workers: the registry of workers the scheduler knows, and what each one has.

Per worker: the tasks sent to it (``processing``, in dispatch order, with their estimated
seconds, summed in ``load``), tasks it was told to cancel and has not answered for
(``cancelling``), the results it holds (``held``, ``nbytes``) and the tasks queued for it
(``ready``). The registry refuses a newcomer that claims the address or the name of a
live worker.
"""

from __future__ import annotations

from collections import deque


class Refused(ValueError):
    """A worker may not register; the message says why."""


class WorkerInfo:
    """What the scheduler knows of one worker."""

    __slots__ = (
        "idx", "name", "address", "nthreads", "memory_limit", "pid", "host", "info",
        "processing", "load", "ready", "nbytes", "held", "cancelling", "alive", "metrics", "local",
        "unstealable",
    )

    def __init__(self, idx: int, info: dict) -> None:
        self.idx = idx
        self.info = info
        self.name = str(info.get("name", idx))
        self.address = info["address"]
        # on the scheduler's host (ipc): its arena references mean something to its peers there
        self.local = self.address.startswith("ipc://")
        self.nthreads = int(info.get("nthreads", 1))
        self.memory_limit = info.get("memory_limit")
        self.pid = info.get("pid")
        self.host = info.get("host")
        self.processing: dict[int, float] = {}  # tid -> estimated seconds, in dispatch order
        self.load = 0.0  # estimated seconds of the work in `processing`
        self.cancelling: dict[int, int] = {}  # tid -> cancels sent and not answered yet
        self.ready: deque[int] = deque()  # tasks that should run here (data or restriction)
        # len(ready) when a thief last found nothing it may take (all restricted here): no
        # rescan of the same restricted backlog at every dispatch until stealable work comes
        self.unstealable = 0
        self.nbytes = 0  # bytes of results held
        self.held: set[int] = set()  # tids of the results it holds
        self.alive = True
        self.metrics: dict = {}


def allowed(wi: WorkerInfo, restrict: tuple) -> bool:
    """Whether a task restricted to ``restrict`` (addresses or names) may run on ``wi``."""
    return wi.address in restrict or wi.name in restrict


class Workers:
    """Every worker that ever joined (indexed by join order), and the live ones by address and name."""

    def __init__(self) -> None:
        self.all: list[WorkerInfo] = []
        self.alive: list[WorkerInfo] = []  # rebuilt on each join or death, never per event
        self.by_address: dict[str, int] = {}
        self.by_name: dict[str, int] = {}

    def __getitem__(self, w: int) -> WorkerInfo:
        return self.all[w]

    def __len__(self) -> int:
        return len(self.all)

    def check(self, info: dict) -> None:
        """Raise :class:`Refused` if ``info`` claims what a live worker holds."""
        address = info["address"]
        name = str(info.get("name", len(self.all)))
        w = self.by_address.get(address)
        if w is not None:
            raise Refused(f"address {address} is held by live worker {self.all[w].name!r}")
        w = self.by_name.get(name)
        if w is not None:
            raise Refused(f"worker name {name!r} is taken by the live worker at {self.all[w].address}")

    def add(self, info: dict) -> WorkerInfo:
        """Register a worker (after :meth:`check`)."""
        wi = WorkerInfo(len(self.all), info)
        self.all.append(wi)
        self.by_address[wi.address] = wi.idx
        self.by_name[wi.name] = wi.idx
        self.alive = [*self.alive, wi]  # a new list: callers may be iterating the old one
        return wi

    def remove(self, wi: WorkerInfo) -> None:
        """Mark ``wi`` dead and drop it from the live maps."""
        wi.alive = False
        if self.by_address.get(wi.address) == wi.idx:
            del self.by_address[wi.address]
        if self.by_name.get(wi.name) == wi.idx:
            del self.by_name[wi.name]
        self.alive = [w for w in self.alive if w.alive]

    def worker_for(self, ref: str) -> int | None:
        """The live worker a restriction's entry means: an address, else a name."""
        w = self.by_address.get(ref)
        return self.by_name.get(ref) if w is None else w
