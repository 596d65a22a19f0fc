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

Start-up is the sum of what cannot overlap, so the agent overlaps what it can: as soon as
it runs it starts the processes its first line says it will need (``warm``: the scheduler,
the workers), each importing its modules (the workers' also start their fork server)
while the launcher is still reaching the other hosts; the role then only hands them
their command lines (:func:`warm`). With a fixed scheduler port the scheduler's address
is known before the scheduler runs, so the workers start at once, next to it, and
connect as it binds (a worker waits ``connect_timeout`` for its welcome).
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
        self.warm: dict[str, subprocess.Popen] = {}  # kind -> a process waiting for its command line
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
    def _spawn(self, argv: list[str], stdin: int = subprocess.DEVNULL) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, env=self.env,
                                cwd=self.workdir, start_new_session=True, preexec_fn=_die_with_parent)
        self.children.append(proc)
        return proc

    def prewarm(self, kinds: list) -> None:
        """Start a waiting process (see :func:`warm`) for each of ``kinds`` the role may use."""
        for kind in kinds:
            if kind in WARM_KINDS and kind not in self.warm:
                self.warm[kind] = self._spawn([sys.executable, "-m", "frisky.deploy.launch.remote", "warm", kind],
                                              stdin=subprocess.PIPE)

    def _run_frisky(self, kind: str, args: list[str]) -> subprocess.Popen:
        """``frisky <args>``: in the warm process of ``kind`` if there is one, else a new one."""
        proc = self.warm.pop(kind, None)
        if proc is not None:
            if _hand_over(proc, args):
                return proc
            self.children.remove(proc)  # it died waiting: start afresh
        return self._spawn([sys.executable, "-m", "frisky.cli.main", *args])

    def _drop_warm(self) -> None:
        """Warm processes the role did not use exit now (an empty command)."""
        for proc in self.warm.values():
            _hand_over(proc, None)
        self.warm.clear()

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

    def start_scheduler(self, role: dict) -> subprocess.Popen:
        argv = ["scheduler", "--host", self.address, "--port", str(role.get("port", 0)), *self._keys(role)]
        dport = role.get("dashboard_port")
        argv += ["--dashboard-address", f"{self.address}:{dport}" if dport is not None else "none"]
        argv += role.get("scheduler_args", [])
        return self._run_frisky("scheduler", argv)

    def scheduler_up(self, proc: subprocess.Popen, role: dict) -> str | None:
        """Wait for the scheduler's address line and report it; None if it did not start."""
        dport = role.get("dashboard_port")
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
        argv = ["worker", scheduler, "--nworkers", str(n), "--host", self.address,
                "--name", role.get("name") or socket.gethostname()]
        for flag in ("nthreads", "memory_limit"):
            if role.get(flag) is not None:
                argv += ["--" + flag.replace("_", "-"), str(role[flag])]
        if not role.get("restart", True):
            argv.append("--no-restart")
        if role.get("keys"):
            argv += self._keys(role)
        argv += role.get("worker_args", [])
        proc = self._run_frisky("workers", argv)
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
        self.prewarm(list(self.first.get("warm") or ()))
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
            workers = role.get("workers", 1) != 0
            if role.get("run_scheduler"):
                proc = self.start_scheduler(role)
                early = predicted_address(self.address, role.get("port", 0))
                if early and workers:  # they connect as it binds
                    self.start_workers(role, early)
                scheduler = self.scheduler_up(proc, role)
                if scheduler is None:
                    return 1
                if early and workers and scheduler != early:  # cannot be, unless the scheduler moved
                    self.emit("error", message=f"the scheduler listens at {scheduler}, not at {early}")
                    return 1
                if early:
                    workers = False
            if scheduler and workers:
                self.start_workers(role, scheduler)
            self._drop_warm()
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


WARM_KINDS = ("scheduler", "workers")


def predicted_address(address: str, port: int) -> str | None:
    """The address a scheduler started with ``--host address --port port`` will print, when
    that is known beforehand: a fixed port and an IPv4 address (None otherwise)."""
    if not port or ":" in address:
        return None
    return f"tcp://{address}:{port}"


def _hand_over(proc: subprocess.Popen, args: list[str] | None) -> bool:
    """Give a warm process its command line (None: exit); False if it is gone."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(args).encode() + b"\n")
        proc.stdin.close()
        return True
    except (BrokenPipeError, OSError, ValueError):  # it died while it waited
        return False


def warm(kind: str) -> None:
    """A process started before its command line is known: import what ``frisky <kind>``
    needs (workers: also start the fork server they are forked from), then read the command
    line, a JSON list, from stdin and run it; exit on null or end of input."""
    if kind == "workers":
        import frisky.cli.worker  # noqa: F401 - imported now, while the launcher waits
        from frisky.deploy import nanny, zygote  # noqa: F401

        zygote.get()
    else:
        import frisky.scheduler.server  # noqa: F401
    line = sys.stdin.buffer.readline()
    args = json.loads(line) if line.strip() else None
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        sys.exit(0)
    from frisky.cli.main import main as frisky_main

    frisky_main(args)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):  # the group is already gone
        pass


def main(first: dict[str, Any]) -> None:
    """Entry point for the bootstrap in :mod:`.session`."""
    sys.exit(Agent(first).run())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "warm" and sys.argv[2] in WARM_KINDS:
        warm(sys.argv[2])
    else:
        sys.exit("usage: python -m frisky.deploy.launch.remote warm {scheduler,workers} (frisky-launch runs it)")
