"""Fake hosts on this machine for trying ``frisky-launch`` (root only).

    python scripts/fakehosts.py 3                 # make h1..h3, print how to use them, wait for Ctrl-C
    python scripts/fakehosts.py 3 -- CMD ARGS...  # run CMD in the head namespace, then remove them

Each host is a network namespace with its own hostname, /dev/shm, /tmp and sshd; see
frisky/deploy/launch/testhosts.py. Everything is removed on exit.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from frisky.deploy.launch.testhosts import FakeHosts, unavailable


def main(argv: list[str]) -> int:
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    n = int(argv[0]) if argv else 3
    why = unavailable()
    if why:
        print(f"fakehosts: {why}", file=sys.stderr)
        return 2
    with FakeHosts(n) as fh:

        if command:
            return subprocess.run(fh.head(command), check=False).returncode
        print(f"hosts {','.join(fh.names)} ({', '.join(h.address for h in fh.hosts)})")
        print(f"head namespace {fh.head_ns}; a shell there: ip netns exec {fh.head_ns} bash")
        print(f"  then: frisky-launch --hosts {','.join(fh.names)} --ssh \"{fh.ssh}\"")
        print("Ctrl-C removes everything", flush=True)
        done = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: done.set())
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
