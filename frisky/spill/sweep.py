"""Naming of private spill directories and removal of those whose owner died."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from frisky import config
from frisky.procs import pid_alive

PREFIX = "frisky-spill-"


def spill_root(directory: str | None = None) -> str:
    """Where spill directories go: ``directory``, else the setting, else the temp dir."""
    return directory or config.get("spill_directory") or tempfile.gettempdir()


def dir_prefix(name: str) -> str:
    """``frisky-spill-<name>-<pid>-`` (mkdtemp appends a random suffix without dashes)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "worker"
    return f"{PREFIX}{safe}-{os.getpid()}-"


def owner_pid(dirname: str) -> int | None:
    """The owner's pid encoded in a spill directory's name, or None if it is not one of ours."""
    if not dirname.startswith(PREFIX):
        return None
    parts = dirname[len(PREFIX):].rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


def sweep(directory: str | None = None) -> int:
    """Remove spill directories in ``directory`` whose owning process is gone; return how many.

    A pid reused by an unrelated process keeps its directory (we err on the side of keeping).
    """
    root = spill_root(directory)
    removed = 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for dirname in names:
        pid = owner_pid(dirname)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        path = os.path.join(root, dirname)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed += 1
    return removed
