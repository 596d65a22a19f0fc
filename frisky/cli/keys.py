"""``frisky keys new DIR``: CURVE keys for a cluster started by hand.

Give ``DIR`` to ``frisky scheduler --keys DIR`` and ``frisky worker --keys DIR`` (they read
``cluster.json``) and to ``Client(address, keys=DIR)`` (it reads ``client.json``); copy
only ``client.json`` to the machines of people who should be clients and nothing more.
"""

from __future__ import annotations

import os
import sys

USAGE = "usage: frisky keys new DIR"


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] != "new":
        print(USAGE, file=sys.stderr if argv[:1] not in (["-h"], ["--help"]) else sys.stdout)
        sys.exit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    from frisky.zmq import curve

    directory = argv[1]
    existing = [n for n in (curve.CLUSTER_FILE, curve.CLIENT_FILE) if os.path.exists(os.path.join(directory, n))]
    if existing:
        print(f"frisky keys: {directory} already holds {', '.join(existing)}: not overwriting", file=sys.stderr)
        sys.exit(2)
    try:
        curve.new(directory)
    except (OSError, RuntimeError) as e:
        print(f"frisky keys: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"keys in {directory}: {curve.CLUSTER_FILE} for the scheduler and workers, "
          f"{curve.CLIENT_FILE} for clients")
