"""The ``frisky`` command: ``scheduler``, ``worker``, ``launch``, ``keys``, ``demo``, ``observe``."""

from __future__ import annotations

import sys

_USAGE = """usage: frisky [--version] COMMAND [ARGS]

commands:
  scheduler   run a scheduler (frisky scheduler --help)
  worker      run a worker connected to a scheduler (frisky worker --help)
  launch      start a cluster on many hosts over ssh (frisky launch --help)
  keys        make CURVE keys for a cluster (frisky keys new DIR)
  demo        start a local cluster, run a mixed workload, show what it did (frisky demo --help)
  observe     look inside a running cluster: frisky observe VIEW [URL] [--json], VIEW one of
{views}
"""


def usage() -> str:
    from frisky.observe.views import summary

    return _USAGE.format(views=summary(indent=4))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return
    if argv[0] in ("-V", "--version"):
        from frisky import __version__

        print(f"frisky {__version__}")
        return
    cmd, rest = argv[0], argv[1:]
    if cmd == "scheduler":
        from frisky.scheduler.server import main as run
    elif cmd == "worker":
        from frisky.cli.worker import main as run
    elif cmd == "launch":
        from frisky.deploy.launch.launcher import main as run
    elif cmd == "keys":
        from frisky.cli.keys import main as run
    elif cmd == "demo":
        from frisky.cli.demo import main as run
    elif cmd == "observe":
        from frisky.observe.cli import main as run
    else:
        from frisky.cli.args import fail

        fail("frisky", f"unknown command {cmd!r} (commands: scheduler, worker, launch, keys, demo, observe; see frisky --help)")
    run(rest)


if __name__ == "__main__":
    main()
