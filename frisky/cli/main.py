"""The ``frisky`` command: ``scheduler``, ``worker``, ``demo``."""

from __future__ import annotations

import sys

USAGE = """usage: frisky COMMAND [ARGS]

commands:
  scheduler   run a scheduler (frisky scheduler --help)
  worker      run a worker connected to a scheduler (frisky worker ADDRESS --help)
  launch      start a cluster on many hosts over ssh (frisky launch --help)
  demo        start a local cluster and run a small mixed workload
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd == "scheduler":
        from frisky.scheduler.server import main as run

        run(rest)
    elif cmd == "worker":
        from frisky.cli.worker import main as run

        run(rest)
    elif cmd == "launch":
        from frisky.deploy.launch.launcher import main as run

        run(rest)
    elif cmd == "demo":
        from frisky.cli.demo import main as run

        run(rest)
    else:
        print(f"frisky: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
