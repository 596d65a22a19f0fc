"""Every Frisky setting in one place: default, ``FRISKY_*`` environment variable, keyword.

Read a setting with :func:`get`; a keyword argument passed by the caller wins over the
environment (``FRISKY_<NAME>``), which wins over the default here. Settings are read when
a process starts or an object is created (a worker, a client, a spill file), never per
message or per buffer. README.md's configuration table lists them all.
"""

from __future__ import annotations

import math
import os
from typing import Any

DEFAULTS: dict[str, Any] = {
    # networking
    "scheduler": None,  # address or connection file a Client() without one joins (None: a LocalCluster)
    "dashboard": None,  # dashboard URL `frisky observe` reads (None: the connection file's, else :8787)
    "connection": None,  # connection file `frisky observe` reads the dashboard URL from (None: ./frisky.json)
    "scheduler_port": 8786,  # `frisky scheduler`'s default port
    "host": "127.0.0.1",  # interface TCP sockets bind to (scheduler, workers' data sockets)
    "connect_timeout": 10.0,  # seconds a client/worker waits for the scheduler's welcome
    "heartbeat_interval": 1.0,  # seconds between heartbeats, both ways
    "heartbeat_timeout": 15.0,  # silence after which a peer is considered dead
    # largest frame a listening socket accepts (ZMQ_MAXMSGSIZE): a bigger one drops its sender's
    # connection before any memory is reserved for it; submit/scatter frames pass the scheduler
    "max_message_size": 1 << 30,
    "reconnect_timeout": 3600.0,  # seconds a worker keeps trying to rejoin a scheduler that went away
    # data plane
    "inline_threshold": 4096,  # results smaller than this ride inside `finished`
    "shm_threshold": 64 * 1024,  # buffers at least this big go to shared memory
    # bytes of /dev/shm the arena may hold on one host, split among the workers started
    # together there (each also at most its memory_limit): bytes, "4GiB", or a fraction of
    # RAM; like Ray's object store, 30% of RAM by default
    "shm_limit": 0.30,
    "transfer_bytes_in_flight": 256 * 1024 * 1024,  # per worker, for peer fetches
    "compression": "auto",  # auto | none | lz4 | zstd, for TCP frames and spill
    "receive_pool": 0.10,  # fraction of the memory limit kept as warm buffers for large receives
    # scheduling
    "target_queue_seconds": 0.02,  # estimated work kept queued per worker thread
    "unknown_task_duration": 0.5,  # estimate for a function never seen before
    "min_tasks_per_thread": 2,  # tasks kept queued per worker thread, at least...
    "max_tasks_per_thread": 20000,  # ...and at most, whatever the estimates say
    "max_batch": 10000,  # tasks in one `compute` or `submit` message
    "allowed_failures": 3,  # workers a task may kill before it errs with KilledWorker
    "dask_order_limit": 20_000,  # dask graphs up to this many nodes follow dask.order; larger stream
    # memory
    "memory_target": 0.60,  # fraction of the limit: start spilling LRU values
    "memory_spill": 0.70,  # fraction of the limit measured as process RSS: spill more
    "memory_pause": 0.80,  # fraction: stop starting tasks
    "memory_terminate": 0.95,  # fraction of the limit measured as RSS: the nanny kills and restarts the worker
    "memory_monitor_interval": 0.1,  # seconds between a worker's memory checks (also after each result)
    "nanny_memory_interval": 0.02,  # seconds between the nanny's RSS reads of each worker
    "nanny_failed_starts": 5,  # deaths in a row before registering after which the nanny gives up
    "spill_directory": None,  # default: the system temp dir
    "spill_retry_min": 0.1,  # seconds before retrying after a failed spill (disk full); doubles...
    "spill_retry_max": 5.0,  # ...up to this, until a write succeeds
    # checks
    "validate": False,  # the scheduler and workers check every state-machine invariant after each event (tests)
    # telemetry
    "telemetry_spans": 65536,  # ring size per process
    "telemetry": True,  # record spans and ship them; off only to measure what telemetry costs
    # dashboard and /api/v1 on the scheduler: [host]:port, a taken port falls back to a free one; none disables
    "dashboard_address": ":8787",
}


class _Unset:
    def __repr__(self) -> str:
        return "<the setting's default>"


UNSET: Any = _Unset()  # an argument not given: the setting (environment, then default) decides


def dashboard_address(value: Any = UNSET) -> str | None:
    """The dashboard address to serve at: ``value`` if given (None disables), else the
    ``dashboard_address`` setting; ``""``, ``"none"`` and ``"off"`` disable too."""
    if value is UNSET:
        value = get("dashboard_address")
    if value is None:
        return None
    value = str(value).strip()
    return None if value.lower() in ("", "none", "off", "false") else value


def _coerce(name: str, raw: str) -> Any:
    default = DEFAULTS[name]
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def get(name: str, override: Any = None) -> Any:
    """Return setting ``name``: ``override`` if given, else ``FRISKY_<NAME>``, else default."""
    if override is not None:
        return override
    raw = os.environ.get("FRISKY_" + name.upper())
    if raw is not None:
        return _coerce(name, raw)
    return DEFAULTS[name]


_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}
MIN_MEMORY_LIMIT = 2**20  # a worker below this could not hold its own buffers


def parse_bytes(value: str | int | float | None, total: int | None = None) -> int | None:
    """Parse a size: ``1234``, ``"4GiB"``, ``"500MB"``, ``"1.5GiB"``; with ``total``, also a
    fraction of it (``0.5`` or ``"0.5"``, in (0, 1]) or a percentage (``"50%"``).

    ``None``, ``""``, ``"none"`` and ``"auto"`` give None. Anything else that is not a whole
    number of bytes (``1.5``, ``"lots"``, ``-3``, ``True``) raises ValueError saying why.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"not a size: {value!r} (give bytes, a string like '4GiB', or a fraction)")
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "").replace("_", "")
        if text in ("", "none", "auto"):
            return None
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                raise ValueError(f"cannot parse size {value!r}") from None
            return _fraction(percent / 100, total, value)
        num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(num):]
        if unit and unit not in _UNITS:
            raise ValueError(f"unknown size unit {unit!r} in {value!r} (use B, kB, MB, GB, KiB, MiB, GiB…)")
        try:
            number = float(num)
        except ValueError:
            raise ValueError(f"cannot parse size {value!r} (give bytes, a string like '4GiB', "
                             "or a fraction like '0.5')") from None
        if not unit:
            value = number if "." in num or "e" in num else int(num)
        else:
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"size must be a finite, non-negative amount: {value!r}")
            return int(number * _UNITS[unit])
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"size must be finite: {value!r}")
        if 0 < value <= 1:
            return _fraction(value, total, value)
        if not value.is_integer():
            raise ValueError(f"a size is a whole number of bytes or a fraction in (0, 1], not {value!r}")
        value = int(value)
    if value < 0:
        raise ValueError(f"size must not be negative: {value!r}")
    return int(value)


def _fraction(fraction: float, total: int | None, raw: Any) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"a fraction of memory must be in (0, 1], not {raw!r}")
    if total is None:
        raise ValueError(f"a fractional size ({raw!r}) needs a total")
    return int(fraction * total)


def parse_memory_limit(value: str | int | float | None, total: int) -> int | None:
    """A worker's memory limit in bytes: bytes, ``"4GiB"``, or a fraction of ``total`` in
    (0, 1] as float or string; None for ``None``/``"auto"`` (the caller's default).

    Refuses anything else, and limits below 1 MiB, with a ValueError naming the value.
    """
    try:
        limit = parse_bytes(value, total)
    except ValueError as e:
        raise ValueError(f"memory_limit: {e}") from None
    if limit is not None and limit < MIN_MEMORY_LIMIT:
        raise ValueError(f"memory_limit {value!r} is {limit} bytes, below the minimum of 1 MiB "
                         "(give bytes, a string like '4GiB', or a fraction of RAM like 0.5)")
    return limit


def shm_limit(memory_limit: int | None = None) -> int:
    """Bytes of shared memory a cluster's arenas may hold on one host together: the
    ``shm_limit`` setting (a share of RAM, as Ray's object store). With ``memory_limit``:
    the most one worker's region may hold (values there count against its memory limit)."""
    limit = parse_bytes(get("shm_limit"), total_memory()) or 0
    return min(limit, memory_limit) if memory_limit else limit


def total_memory(cgroup_root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int:
    """Memory this process may use, in bytes: the host's physical memory, or less if a cgroup
    (a container, a systemd slice) limits it — cgroups v2 ``memory.max`` and v1
    ``memory.limit_in_bytes`` of this process's group and its ancestors, as dask's
    ``distributed.system.memory_limit`` reads them. The roots are parameters for tests."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        import psutil

        total = psutil.virtual_memory().total
    limit = _cgroup_limit(cgroup_root, proc_cgroup)
    return min(total, limit) if limit else total


def _cgroup_limit(root: str, proc_cgroup: str) -> int | None:
    """The smallest memory limit of the cgroups (v2 or v1) this process is in, if any."""
    v2, v1 = "/", "/"
    try:
        with open(proc_cgroup) as f:
            for line in f:
                num, _, rest = line.strip().partition(":")
                controllers, _, path = rest.partition(":")
                if num == "0" and controllers == "":
                    v2 = path or "/"
                elif "memory" in controllers.split(","):
                    v1 = path or "/"
    except OSError:
        pass  # no /proc (not Linux): only the roots below are looked at
    found = [n for n in (_read_limits(root, v2, "memory.max"),
                         _read_limits(os.path.join(root, "memory"), v1, "memory.limit_in_bytes")) if n]
    return min(found) if found else None


def _read_limits(base: str, path: str, name: str) -> int | None:
    """The smallest positive number in ``name`` in ``base/path`` and each of its ancestors up to
    ``base`` ("max", missing or unreadable files set no limit). Inside a container the group
    path of the host may not exist under the container's mount: then only ``base`` counts."""
    parts = [p for p in path.split("/") if p and p != ".."]
    best = None
    for i in range(len(parts), -1, -1):
        try:
            with open(os.path.join(base, *parts[:i], name)) as f:
                n = int(f.read().strip())
        except (OSError, ValueError):  # absent, or "max": no limit at this level
            continue
        if n > 0 and (best is None or n < best):
            best = n
    return best
