"""``frisky-launch``: start a scheduler and workers on many hosts over ssh, and stop them.

Every host gets one ssh session (:mod:`.session`) running the agent (:mod:`.remote`).
All sessions start at once, each agent starting at once the processes it will run (they
import while the others connect); the scheduler's host is told its role first, and the
others as soon as the scheduler's address is known: with a fixed port, that is as soon as
the scheduler's host reports its own address, before the scheduler runs. So ssh
handshakes, interpreter start-ups and the scheduler's own start overlap. The launcher prints one line per host as it comes up, then the
scheduler's address and dashboard, writes the connection file, and either runs a
command (``-- python script.py``) or waits for Ctrl-C / SIGTERM; then it closes every
session, which stops every remote process.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, TextIO

from frisky.deploy.launch import connection
from frisky.deploy.launch.hosts import HostSpec, parse_host, parse_hostfile, parse_hosts
from frisky.deploy.launch.session import DEFAULT_SSH, Session

logger = logging.getLogger("frisky.launch")


class LaunchError(Exception):
    """The cluster could not be started; the message names the hosts and why."""


class Launcher:
    """A cluster on ``hosts``; :meth:`start`, then :meth:`stop` (or use ``with``)."""

    def __init__(
        self,
        hosts: list[HostSpec],
        *,
        scheduler: HostSpec | None = None,
        workers_per_host: int | None = None,
        nthreads: int | None = None,
        memory_limit: str | None = None,
        spill_dir: str | None = None,
        python: str | None = None,
        ssh: str | None = None,
        port: int = 8786,
        dashboard_port: int | None = 8787,
        env: dict[str, str] | None = None,
        allow_partial: bool = False,
        restart: bool = True,
        insecure: bool = False,
        connection_file: str | None = connection.DEFAULT,
        timeout: float = 60.0,
        heartbeat_interval: float = 1.0,
        out: TextIO | None = None,
        verbose: bool = False,
    ) -> None:
        self.hosts = list(dict.fromkeys(hosts))
        self.scheduler_host = scheduler or self.hosts[0]
        self.workers_per_host = workers_per_host
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.spill_dir = spill_dir
        self.python = python or sys.executable
        self.ssh = ssh or DEFAULT_SSH
        self.port = port
        self.dashboard_port = dashboard_port
        self.env = dict(env or {})
        self.allow_partial = allow_partial
        self.restart = restart
        self.insecure = insecure
        self.keys = self.client_keys = None
        if not insecure:  # fresh per-cluster keys; they travel to the hosts on the sessions' stdin
            from frisky.zmq import curve

            self.keys, self.client_keys = curve.generate()
        self.connection_file = connection_file
        self.timeout = timeout
        self.heartbeat_interval = heartbeat_interval
        self.out = out or sys.stdout
        self.verbose = verbose
        self.sessions: dict[HostSpec, Session] = {}
        self.events: queue.Queue = queue.Queue()
        self.facts: dict[HostSpec, dict] = {}
        self.up: dict[HostSpec, int] = {}
        self.failed: dict[HostSpec, str] = {}
        self.workers: dict[str, str] = {}  # worker name -> address
        self.scheduler_address: str | None = None
        self.dashboard: str | None = None
        self.started_at = 0.0
        self.ready_at: float | None = None
        self._stopped = threading.Event()
        self.scheduler_lost = threading.Event()  # its session ended while the cluster ran
        self._wrote_file = False
        self._heartbeats: threading.Thread | None = None

    def __enter__(self) -> Launcher:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ start
    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _role(self, spec: HostSpec) -> dict[str, Any]:
        workers = spec.workers if spec.workers is not None else self.workers_per_host
        if spec == self.scheduler_host and spec not in self.hosts:
            workers = 0  # a --scheduler host outside the host list runs the scheduler only
        return {"workers": workers, "nthreads": self.nthreads, "memory_limit": self.memory_limit,
                "restart": self.restart, "keys": self.keys.to_json() if self.keys else None}

    def _warm(self, spec: HostSpec) -> list[str]:
        """The processes ``spec``'s agent starts before it knows its role (see :mod:`.remote`)."""
        warm = ["scheduler"] if spec == self.scheduler_host else []
        if self._role(spec)["workers"] != 0:
            warm.append("workers")
        return warm

    def _send_roles(self, address: str) -> None:
        """Tell every host but the scheduler's to start its workers, connecting to ``address``."""
        for other, s in self.sessions.items():
            if other != self.scheduler_host:
                s.send({**self._role(other), "scheduler": address})

    def start(self) -> None:
        """Start every host; raise :class:`LaunchError` if the cluster cannot be used."""
        self.started_at = time.monotonic()
        first = {"env": self.env, "spill_dir": self.spill_dir,
                 "heartbeat_timeout": max(6.0, 5 * self.heartbeat_interval)}
        specs = list(dict.fromkeys([self.scheduler_host, *self.hosts]))
        try:
            for spec in specs:
                self.sessions[spec] = Session(spec, self.ssh, self.python, self._event, self._stderr)
            for spec, s in self.sessions.items():
                s.start({**first, "warm": self._warm(spec)})
            role = {**self._role(self.scheduler_host), "run_scheduler": True, "port": self.port,
                    "dashboard_port": self.dashboard_port}
            self.sessions[self.scheduler_host].send(role)
            self._heartbeats = threading.Thread(target=self._beat, daemon=True, name="launch-heartbeat")
            self._heartbeats.start()
            self._wait_up()
        except BaseException:
            self.stop()
            raise
        self.ready_at = time.monotonic()
        if self.failed and not self.allow_partial:
            self.stop()
            raise LaunchError(self._failures())
        if self.connection_file:
            connection.write(self.connection_file, self.scheduler_address, dashboard=self.dashboard,
                             keys=self.client_keys.to_json() if self.client_keys else None)
            self._wrote_file = True
        self.say(f"scheduler {self.scheduler_address}")
        if self.dashboard:
            self.say(f"dashboard {self.dashboard}")
        if self.connection_file:
            self.say(f"connection file {self.connection_file}")

    def _failures(self) -> str:
        return "; ".join(f"{spec}: {why}" for spec, why in self.failed.items())

    def _wait_up(self) -> None:
        from frisky.deploy.launch.remote import predicted_address

        deadline = self.started_at + self.timeout
        pending = set(self.sessions)
        early = None  # the scheduler's address, told to the other hosts before it ran
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                for spec in pending:
                    self.failed[spec] = f"not up within {self.timeout:.0f}s"
                    self.say(f"{spec}: FAILED: not up within {self.timeout:.0f}s")
                if self.scheduler_host in pending:
                    raise LaunchError(f"scheduler host {self.scheduler_host}: not up within {self.timeout:.0f}s")
                return
            try:
                session, event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            spec, kind = session.spec, event.get("event")
            if kind == "host":
                self.facts[spec] = event
                if spec == self.scheduler_host and isinstance(event.get("address"), str):
                    early = predicted_address(event["address"], self.port)
                    if early:
                        self._send_roles(early)
            elif kind == "scheduler":
                self.scheduler_address, self.dashboard = event["address"], event.get("dashboard")
                if early is None:
                    self._send_roles(self.scheduler_address)
                elif early != self.scheduler_address:  # cannot be, unless the agent and we disagree
                    raise LaunchError(f"scheduler host {spec}: the scheduler listens at "
                                      f"{self.scheduler_address}, not at {early} as its host said")
                if self._role(spec)["workers"] == 0:
                    self._host_up(spec, 0)
                    pending.discard(spec)
            elif kind == "up":
                self._host_up(spec, event["workers"])
                pending.discard(spec)
            elif kind in ("error", "closed") and spec in pending:
                why = session.error()
                if kind == "error":  # the agent's words, and its processes' last ones if any
                    why = event.get("message") + (f": {why}" if session.stderr else "")
                self.failed[spec] = why
                pending.discard(spec)
                self.say(f"{spec}: FAILED: {why}")
                if spec == self.scheduler_host:
                    raise LaunchError(f"scheduler host {spec}: {why}")
            elif kind == "worker":
                self.workers[event["name"]] = event["address"]

    def _host_up(self, spec: HostSpec, workers: int) -> None:
        self.up[spec] = workers
        f = self.facts.get(spec, {})
        mem = f.get("memory", 0) / 2**30
        role = " + scheduler" if spec == self.scheduler_host else ""
        self.say(f"{spec} ({f.get('hostname', '?')}, {f.get('address', '?')}): {workers} workers{role}, "
                 f"{f.get('cores', '?')} cores, {mem:.1f} GiB")

    def _event(self, session: Session, event: dict) -> None:
        """Session threads: during start-up the main thread reads these; afterwards, report."""
        if self.ready_at is None:
            self.events.put((session, event))
            return
        kind = event.get("event")
        if kind == "worker":
            self.workers[event["name"]] = event["address"]
            if event.get("restart"):
                self.say(f"{session.spec}: worker {event['name']} (re)started at {event['address']}")
        elif kind == "error":
            self.say(f"{session.spec}: {event.get('message')}")
        elif kind == "closed" and not self._stopped.is_set():
            self.say(f"{session.spec}: session ended: {session.error()}")
            if session.spec == self.scheduler_host:
                self.scheduler_lost.set()

    def _stderr(self, session: Session, line: str) -> None:
        if self.verbose:
            print(f"{session.spec}: {line}", file=sys.stderr, flush=True)

    def _beat(self) -> None:
        while not self._stopped.wait(self.heartbeat_interval):
            for s in list(self.sessions.values()):
                s.send(None)

    # ------------------------------------------------------------------ stop
    def stop(self, timeout: float = 8.0) -> float:
        """Close every session (the agents stop their processes); returns the seconds it took."""
        t0 = time.monotonic()
        self._stopped.set()
        for s in self.sessions.values():
            s.close()
        deadline = t0 + timeout
        for s in self.sessions.values():
            if not s.wait(max(0.0, deadline - time.monotonic())):
                self.say(f"{s.spec}: did not stop within {timeout:.0f}s; killing its ssh session")
                s.kill()
        if self._wrote_file and self.connection_file:
            try:
                os.unlink(self.connection_file)
            except FileNotFoundError:  # removed by the user meanwhile
                pass
            self._wrote_file = False
        return time.monotonic() - t0


# ---------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="frisky-launch",
        description="Start a Frisky cluster on many hosts over ssh; with -- COMMAND, run it and stop.",
        usage="frisky-launch (--hosts H1,H2 | --hostfile FILE) [options] [-- COMMAND ...]")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--hosts", help="comma-separated [user@]host[:port]")
    where.add_argument("--hostfile", help="one [user@]host[:port] [workers=N] a line, # comments")
    p.add_argument("--scheduler", help="host that runs the scheduler (default: the first host)")
    p.add_argument("--workers-per-host", type=int, default=None, help="default: one per core of each host")
    p.add_argument("--nthreads", type=int, default=None, help="threads per worker")
    p.add_argument("--memory-limit", default=None, help="per worker: bytes, 4GiB, or a fraction of RAM")
    p.add_argument("--spill-dir", default=None, help="directory on each host for spill files")
    p.add_argument("--python", default=None, help="remote interpreter (default: this one's path)")
    p.add_argument("--ssh", default=None, help=f'ssh command (default "{DEFAULT_SSH}")')
    p.add_argument("--port", type=int, default=8786, help="scheduler port (default 8786)")
    p.add_argument("--dashboard-port", type=int, default=8787, help="dashboard port (default 8787)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment for remote processes")
    p.add_argument("--allow-partial", action="store_true", help="go on when some hosts fail")
    p.add_argument("--no-restart", dest="restart", action="store_false", help="do not restart workers that die")
    p.add_argument("--insecure", action="store_true", help="no keys, no encryption (trusted networks only)")
    p.add_argument("--connection-file", default=connection.DEFAULT, help="where to write it (default frisky.json)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for every host to come up")
    p.add_argument("-v", "--verbose", action="store_true", help="show the remote processes' stderr")
    return p


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str], Launcher]:
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    p = parser()
    args = p.parse_args(argv)
    try:
        if args.hosts is not None:
            hosts = parse_hosts(args.hosts)
        else:
            try:
                with open(args.hostfile) as f:
                    hosts = parse_hostfile(f.read(), args.hostfile)
            except OSError as e:
                raise ValueError(f"cannot read {args.hostfile}: {e.strerror}") from None
        sched = parse_host(args.scheduler) if args.scheduler else None
        if sched is not None:
            # the same host given as --scheduler and in the list: one session
            sched = next((h for h in hosts if (h.host, h.user, h.port) == (sched.host, sched.user, sched.port)), sched)
        env = {}
        for item in args.env:
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise ValueError(f"--env takes K=V, not {item!r}")
            env[k] = v
        for name in ("workers_per_host", "nthreads"):
            v = getattr(args, name)
            if v is not None and v < (0 if name == "workers_per_host" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be positive, not {v}")
        for name in ("port", "dashboard_port"):
            if not 0 <= getattr(args, name) < 65536:
                raise ValueError(f"--{name.replace('_', '-')} out of range: {getattr(args, name)}")
        if args.memory_limit is not None:
            from frisky import config

            config.parse_bytes(args.memory_limit, 1 << 40)
    except ValueError as e:
        p.error(str(e))
    launcher = Launcher(
        hosts, scheduler=sched, workers_per_host=args.workers_per_host, nthreads=args.nthreads,
        memory_limit=args.memory_limit, spill_dir=args.spill_dir, python=args.python, ssh=args.ssh,
        port=args.port, dashboard_port=args.dashboard_port, env=env, allow_partial=args.allow_partial,
        restart=args.restart, insecure=args.insecure, connection_file=args.connection_file, timeout=args.timeout, verbose=args.verbose)
    return args, command, launcher


def main(argv: list[str] | None = None) -> None:
    """``frisky-launch`` / ``frisky launch``."""
    argv = sys.argv[1:] if argv is None else argv
    _args, command, launcher = _parse(argv)
    stop = threading.Event()
    child: list[subprocess.Popen] = []

    def on_signal(sig, _frame) -> None:
        stop.set()
        if child and sig == signal.SIGTERM:
            child[0].send_signal(sig)  # Ctrl-C reaches it from the terminal already

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        launcher.start()
    except LaunchError as e:
        print(f"frisky-launch: {e}", file=sys.stderr)
        sys.exit(1)
    status = 0
    try:
        if command:
            env = dict(os.environ, FRISKY_SCHEDULER=os.path.abspath(launcher.connection_file)
                       if launcher.connection_file else launcher.scheduler_address)
            try:
                child.append(subprocess.Popen(command, env=env))
            except OSError as e:
                print(f"frisky-launch: cannot run {command[0]}: {e.strerror}", file=sys.stderr)
                status = 127
            else:
                rc = child[0].wait()
                status = rc if rc >= 0 else 128 - rc
        else:
            while not stop.wait(0.5):
                if launcher.scheduler_lost.is_set():
                    status = 1
                    break
    finally:
        took = launcher.stop()
        launcher.say(f"stopped in {took:.2f}s")
    sys.exit(status)


if __name__ == "__main__":
    main()
