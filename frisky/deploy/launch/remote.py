"""The agent that ``frisky-launch`` runs on each host, at the far end of an ssh session.

It reads its configuration (and the cluster's keys) as JSON lines on stdin, never from
its command line: first the environment (see :mod:`.session`), then its role: run the
scheduler, workers (``frisky worker --nworkers N``, supervised by the nanny), or both.
It reports JSON event lines on stdout (``host``, ``scheduler``, ``worker``, ``up``,
``error``, ``exit``) and stops, killing every process it started and removing its work
directory, when stdin closes (the launcher stopped, was killed, or its ssh session
died), when ``stop`` arrives, or when the launcher's heartbeat lines stop for
``heartbeat_timeout`` seconds (a network that drops without closing the connection).

Every process it starts gets a private work directory as ``TMPDIR`` (ipc directories,
spill files), removed when the agent exits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from frisky import config

_WORKER_LINE = re.compile(r"^frisky worker (\S+) at (\S+)")
_SCHEDULER_LINE = re.compile(r"^frisky scheduler at (\S+)")


def _own_address() -> str:
    """This host's address as the launcher reached it (the server end of the ssh session)."""
    parts = os.environ.get("SSH_CONNECTION", "").split()
    if len(parts) == 4:
        return parts[2]
    return socket.gethostbyname(socket.gethostname())


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _die_with_parent() -> None:
    from frisky.procs import die_with_parent

    die_with_parent()


class Agent:
    """One host's share of a launched cluster."""

    def __init__(self, first: dict[str, Any]) -> None:
        self.first = first
        self.address = first.get("address") or _own_address()
        self.heartbeat_timeout = float(first.get("heartbeat_timeout", 6.0))
        self.stopping = threading.Event()
        self.why = "stdin closed"
        self.last_seen = time.monotonic()
        self.role: dict[str, Any] | None = None
        self.got_role = threading.Event()
        self.children: list[subprocess.Popen] = []
        self.workers_up = 0
        self.workers_wanted = 0
        self._out = threading.Lock()
        self.workdir = tempfile.mkdtemp(prefix="frisky-launch-")
        self.env = dict(os.environ, TMPDIR=self.workdir)
        self.env.pop("FRISKY_SCHEDULER", None)
        spill = first.get("spill_dir")
        if spill:
            os.makedirs(spill, exist_ok=True)
            self.spill_dir = tempfile.mkdtemp(prefix="frisky-launch-spill-", dir=spill)
            self.env["FRISKY_SPILL_DIRECTORY"] = self.spill_dir
        else:
            self.spill_dir = None

    # ------------------------------------------------------------------ I/O
    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        with self._out:
            try:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, OSError, ValueError):  # the launcher is gone: we are stopping
                self.stop("stdout closed")

    def stop(self, why: str) -> None:
        if not self.stopping.is_set():
            self.why = why
            self.stopping.set()

    def _read_stdin(self) -> None:
        stdin = sys.stdin.buffer
        while True:
            try:
                raw = stdin.readline()
            except (OSError, ValueError):
                raw = b""
            if not raw:
                self.stop("the launcher's session ended")
                return
            self.last_seen = time.monotonic()
            line = raw.strip()
            if not line:
                continue  # heartbeat
            try:
                msg = json.loads(line)
            except ValueError:
                self.emit("error", message=f"unreadable line from the launcher: {line[:80]!r}")
                continue
            if msg == "stop":
                self.stop("asked to stop")
                return
            if isinstance(msg, dict) and self.role is None:
                self.role = msg
                self.got_role.set()

    # ------------------------------------------------------------------ processes
    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=self.env,
                                cwd=self.workdir, start_new_session=True, preexec_fn=_die_with_parent)
        self.children.append(proc)
        return proc

    def _frisky(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "frisky.cli.main", *args]

    def _keys(self, role: dict) -> list[str]:
        """``--keys DIR`` for the cluster's keys, written 0600 into our private work directory
        (never on a command line); ``--insecure`` without keys."""
        if not role.get("keys"):
            return ["--insecure"]
        from frisky.zmq import curve

        directory = os.path.join(self.workdir, "keys")
        if not os.path.isdir(directory):
            curve.write(directory, curve.load(role["keys"], serving=True), None)
        return ["--keys", directory]

    def start_scheduler(self, role: dict) -> str | None:
        argv = self._frisky("scheduler", "--host", self.address, "--port", str(role.get("port", 0)),
                            *self._keys(role))
        dport = role.get("dashboard_port")
        argv += ["--dashboard-address", f"{self.address}:{dport}" if dport is not None else "none"]
        argv += role.get("scheduler_args", [])
        proc = self._spawn(argv)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode(errors="replace")
        m = _SCHEDULER_LINE.match(line)
        if not m:
            proc.wait(5)
            self.emit("error", message=f"the scheduler did not start (status {proc.returncode})")
            return None
        address = m[1]
        dashboard = f"http://{self.address}:{dport}" if dport else None
        self.emit("scheduler", address=address, dashboard=dashboard)
        threading.Thread(target=self._watch, args=(proc, "scheduler"), daemon=True).start()
        return address

    def start_workers(self, role: dict, scheduler: str) -> None:
        n = role.get("workers") or _cores()
        self.workers_wanted = n
        argv = self._frisky("worker", scheduler, "--nworkers", str(n), "--host", self.address,
                            "--name", role.get("name") or socket.gethostname())
        for flag in ("nthreads", "memory_limit"):
            if role.get(flag) is not None:
                argv += ["--" + flag.replace("_", "-"), str(role[flag])]
        if not role.get("restart", True):
            argv.append("--no-restart")
        if role.get("keys"):
            argv += self._keys(role)
        argv += role.get("worker_args", [])
        proc = self._spawn(argv)
        threading.Thread(target=self._read_workers, args=(proc,), daemon=True).start()

    def _read_workers(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            m = _WORKER_LINE.match(raw.decode(errors="replace"))
            if not m:
                continue
            self.workers_up += 1
            self.emit("worker", name=m[1], address=m[2], restart=self.workers_up > self.workers_wanted)
            if self.workers_up == self.workers_wanted:
                self.emit("up", workers=self.workers_wanted)
        self._watch(proc, "workers")

    def _watch(self, proc: subprocess.Popen, what: str) -> None:
        status = proc.wait()
        if not self.stopping.is_set():
            self.emit("error", message=f"the {what} exited with status {status}")
            if what == "scheduler":
                self.stop("the scheduler exited")

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        threading.Thread(target=self._read_stdin, daemon=True, name="stdin").start()
        self.emit("host", hostname=socket.gethostname(), cores=_cores(), memory=config.total_memory(),
                  address=self.address, python=sys.executable, pid=os.getpid())
        signal.signal(signal.SIGTERM, lambda *_: self.stop("SIGTERM"))
        signal.signal(signal.SIGHUP, lambda *_: self.stop("SIGHUP"))
        try:
            while not self.got_role.wait(0.2):
                if self.stopping.is_set():
                    return 0
            role = self.role or {}
            scheduler = role.get("scheduler")
            if role.get("run_scheduler"):
                scheduler = self.start_scheduler(role)
                if scheduler is None:
                    return 1
            if scheduler and role.get("workers", 1) != 0:
                self.start_workers(role, scheduler)
            while not self.stopping.wait(0.5):
                if time.monotonic() - self.last_seen > self.heartbeat_timeout:
                    self.stop(f"no heartbeat from the launcher for {self.heartbeat_timeout:.0f}s")
            return 0
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop every process started here, then remove what they left."""
        for proc in self.children:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + float(self.first.get("stop_timeout", 3.0))
        for proc in self.children:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # killed below, with its group
        for proc in self.children:
            _signal_group(proc, signal.SIGKILL)  # whatever a child left in its group
            proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.spill_dir:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
        from frisky.shm import segments

        segments.sweep()  # segments of processes that were killed before they could unlink
        self.emit("exit", why=self.why)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):  # the group is already gone
        pass


def main(first: dict[str, Any]) -> None:
    """Entry point for the bootstrap in :mod:`.session`."""
    sys.exit(Agent(first).run())
