"""Fake hosts for the many-machines tests, and a launcher running among them.

The hosts themselves are :mod:`frisky.deploy.launch.testhosts` (shared with
``scripts/fakehosts.py``); this module adds what tests need: run ``frisky-launch`` and
Python snippets in the head namespace, wait for the cluster, and check that nothing is
left on any host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import frisky
from frisky.deploy.launch.testhosts import FakeHosts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(frisky.__file__)))


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT)


class Launch:
    """``frisky-launch`` started in the head namespace; its output is collected as it comes."""

    def __init__(self, fh: FakeHosts, *args: str, hosts: str | None = None, command: list[str] | None = None) -> None:
        self.fh = fh
        self.connection_file = os.path.join(fh.dir, f"frisky-{time.monotonic_ns()}.json")
        argv = [sys.executable, "-m", "frisky.deploy.launch.launcher", "--hosts", hosts or ",".join(fh.names),
                "--ssh", fh.ssh, "--env", f"PYTHONPATH={ROOT}", "--connection-file", self.connection_file,
                "--timeout", "30", *args]
        if command:
            argv += ["--", *command]
        self.proc = subprocess.Popen(fh.head(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env())
        self.lines: list[str] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        self.changed = threading.Condition()
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            with self.changed:
                into.append(line.rstrip("\n"))
                if line.startswith("connection file"):
                    self.ready.set()
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_ready(self, timeout: float = 40.0) -> Launch:
        if not self.ready.wait(timeout):
            self.stop()
            raise AssertionError(f"the cluster did not come up: {self.output()}")
        return self

    def wait_line(self, text: str, timeout: float = 30.0) -> str:
        with self.changed:
            found = self.changed.wait_for(lambda: [x for x in self.lines if text in x] or self.proc.poll() is not None,
                                          timeout)
        hits = [x for x in self.lines if text in x]
        assert hits, f"no line with {text!r}: {self.output()} ({found})"
        return hits[-1]

    def output(self) -> str:
        return "\n".join(self.lines + ["--- stderr:"] + self.err)

    def wait(self, timeout: float = 40.0) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait(5)

    def python(self, code: str, timeout: float = 60.0, **extra_env: str) -> subprocess.CompletedProcess:
        """Run ``code`` in the head namespace with ``FRISKY_SCHEDULER`` naming this cluster."""
        e = dict(env(), FRISKY_SCHEDULER=self.connection_file, **extra_env)
        return subprocess.run(self.fh.head([sys.executable, "-c", code]), capture_output=True, text=True,
                              timeout=timeout, env=e, check=False)


def nothing_left(fh: FakeHosts) -> dict[str, list]:
    """Processes and files left on each host (empty lists when all is clean)."""
    return {h.name: fh.pids(h) + fh.leftovers(h) for h in fh.hosts}


def wait_clean(fh: FakeHosts, timeout: float) -> tuple[bool, float, dict]:
    """Wait until no host has anything left; (clean, seconds waited, what was left)."""
    t0 = time.monotonic()
    left = nothing_left(fh)
    while any(left.values()) and time.monotonic() - t0 < timeout:
        time.sleep(0.05)  # polling other namespaces: there is no event to wait on
        left = nothing_left(fh)
    return not any(left.values()), time.monotonic() - t0, left
