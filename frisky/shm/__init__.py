"""POSIX shared-memory segments for same-host zero-copy transfers: create, map, refcount, sweep."""

from frisky.shm.segments import (
    PREFIX,
    SHM_DIR,
    Registry,
    Segment,
    attach,
    cluster_pid,
    create,
    new_cluster_id,
    sweep,
    sweep_owner,
    unlink,
    write,
)

__all__ = [
    "PREFIX",
    "SHM_DIR",
    "Registry",
    "Segment",
    "attach",
    "cluster_pid",
    "create",
    "new_cluster_id",
    "sweep",
    "sweep_owner",
    "unlink",
    "write",
]
