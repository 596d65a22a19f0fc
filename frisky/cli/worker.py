"""``frisky worker ADDRESS``: supervised worker processes, or one bare worker (``--no-nanny``).

By default this process is a nanny (:mod:`frisky.deploy.nanny`) over ``--nworkers``
worker processes forked from a fork server: it restarts one that dies, kills one whose
memory passes ``memory_terminate`` of its limit, and gives up on a crash loop. With
``--no-nanny`` this process is the worker itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

from frisky import config

logger = logging.getLogger("frisky.worker")
_CANNOT_LISTEN = "cannot listen at"  # a worker's fatal word for a bad or busy listen address


def parser() -> argparse.ArgumentParser:
    from frisky.cli import args as cli

    p = cli.Parser(prog="frisky worker", description="Run Frisky workers, each under a nanny.")
    p.add_argument("address", type=cli.address, help="scheduler address, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--nworkers", type=cli.positive_int, default=1, help="worker processes to start (default 1)")
    p.add_argument("--nthreads", type=cli.positive_int, default=1, help="threads per worker")
    p.add_argument("--memory-limit", type=cli.memory_limit, default=None,
                   help='per worker: bytes, "4GiB", or a fraction of RAM like 0.5 (default: RAM / nworkers)')
    p.add_argument("--name", default=None, help="worker name (NAME-0, NAME-1 ... with --nworkers > 1)")
    p.add_argument("--listen-address", type=cli.address, default=None, help="address peers fetch data from")
    p.add_argument("--host", default=None, help="interface for the peer socket (default 127.0.0.1)")
    p.add_argument("--no-nanny", dest="nanny", action="store_false",
                   help="run one worker in this process, unsupervised")
    p.add_argument("--no-restart", dest="restart", action="store_false",
                   help="supervise the workers but do not restart one that dies")
    p.add_argument("--quiet", action="store_true", help="do not print the worker's address when it starts")
    p.add_argument("--keys", default=None, help="directory of the cluster's keys (frisky keys new DIR)")
    p.add_argument("--shm-limit", type=cli.nonnegative_int, default=None, help=argparse.SUPPRESS)  # bytes: the host's arena budget
    p.add_argument("--status-fd", type=int, default=None, help=argparse.SUPPRESS)  # to the nanny
    p.add_argument("--die-with-parent", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not args.nanny:
        if args.nworkers != 1:
            parser().error("--no-nanny runs one worker: --nworkers does not apply")
        run_worker(args)
    else:
        sys.exit(run_nanny(args))


def _limit(args: argparse.Namespace) -> int:
    if args.memory_limit is None:  # "auto": checked and parsed by the argument's type
        return config.total_memory() // args.nworkers
    return args.memory_limit


class _Status:
    """The worker's end of its nanny's status pipe (see :mod:`frisky.deploy.nanny`)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def say(self, line: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (line + "\n").encode())
        except OSError:  # the nanny is gone: nobody to tell, we exit with our parent anyway
            self.fd = None


def _keys(args: argparse.Namespace):
    """The cluster's keys from ``--keys`` (None without); exit status 2 if they cannot be used."""
    if not args.keys:
        return None
    from frisky.zmq import curve

    try:
        return curve.load(args.keys, serving=True)
    except ValueError as e:
        print(f"frisky worker: {e}", file=sys.stderr)
        sys.exit(2)


def run_worker(args: argparse.Namespace) -> None:
    """This process is one worker; it rejoins a scheduler that goes away and comes back.

    Each connection to the scheduler is a fresh :class:`Worker` (new socket identity, empty
    store): a restarted scheduler knows nothing of the old one's tasks and data, and nothing
    queued for the old one may reach it.
    """
    import time

    from frisky.deploy import malloc_tuning
    from frisky.procs import die_with_parent

    if args.die_with_parent:
        die_with_parent()
    malloc_tuning.set_mmap_threshold()  # forked workers have it from the fork server; by hand too
    status = _Status(args.status_fd)
    listen = args.listen_address or (f"tcp://{args.host}:0" if args.host else None)
    limit, keys = _limit(args), _keys(args)
    current: list = []
    stopping: list = []

    def stop(*_) -> None:
        stopping.append(True)
        if current:
            current[-1].stop(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    lost_at: float | None = None
    began = time.monotonic()
    while not stopping:
        timeout = None
        if lost_at is not None:  # keep trying until reconnect_timeout has passed since the loss
            timeout = max(0.1, config.get("reconnect_timeout") - (time.monotonic() - lost_at))
        worker = _new_worker(args, listen, limit, keys, timeout, status)
        current.append(worker)
        if stopping:
            worker.stop(0)

        def ready(worker=worker, lost_at=lost_at) -> None:
            status.say("ready")
            if args.quiet:
                return
            if lost_at is not None:
                print(f"frisky worker {worker.name} rejoined the scheduler at {worker.scheduler_address} "
                      f"after {time.monotonic() - lost_at:.1f} s", flush=True)
                return
            print(f"frisky worker {worker.name} at {worker.address} (pid {os.getpid()}, {worker.nthreads} threads, "
                  f"memory limit {(worker.memory_limit or 0) / 2**20:.0f} MiB), scheduler {worker.scheduler_address}",
                  flush=True)

        worker.on_ready = ready
        try:
            worker.run()
        except (TimeoutError, ConnectionRefusedError) as e:  # no scheduler, or it refused us
            current.pop()
            if _retry(e, lost_at, status.fd is not None, time.monotonic() - began):
                time.sleep(0.5)  # a retry interval, not synchronisation
                continue
            if lost_at is None:  # at start: one line, and the nanny does not retry
                status.say(f"fatal {e}")
                print(f"frisky worker: {e}", file=sys.stderr)
                sys.exit(1)
            logger.error("worker %s: the scheduler did not come back within %ss; exiting", worker.name,
                         config.get("reconnect_timeout"))
            break
        current.pop()
        if not worker.lost:
            break
        lost_at = time.monotonic()
    status.say("stop")


def _retry(error: Exception, lost_at: float | None, supervised: bool, running_for: float) -> bool:
    """Whether a failed registration is worth another try. A refusal of our name while the
    scheduler has yet to see our predecessor gone passes: after a scheduler restart (it drops
    the old connection after a while), or when a nanny restarted us (it sees its child gone at
    once on this host, the scheduler after heartbeat_timeout across hosts)."""
    if not isinstance(error, ConnectionRefusedError):
        return False  # a timeout: the rejoin deadline (reconnect_timeout) or no scheduler at start
    if lost_at is not None:
        return True
    return supervised and running_for < config.get("heartbeat_timeout") + 5


def _new_worker(args: argparse.Namespace, listen: str | None, limit: int, keys, connect_timeout: float | None,
                status: _Status):
    """A Worker for one connection to the scheduler; when rejoining, its listening port may
    take a moment to be free again."""
    import time

    import zmq

    from frisky.cli import args as cli
    from frisky.worker.server import Worker

    for _ in range(50):
        try:
            return Worker(args.address, keys=keys, name=args.name, nthreads=args.nthreads, memory_limit=limit,
                          shm_limit=args.shm_limit, listen_address=listen, connect_timeout=connect_timeout)
        except (OSError, ValueError, zmq.ZMQError) as e:  # a bad host, a port in use: one line, status 2
            if connect_timeout is None:  # at start: fatal
                why = f"{_CANNOT_LISTEN} {listen or 'a free local port'}: {e}"
                if status.fd is not None:  # supervised: the nanny reports it, in one line
                    status.say(f"fatal {why}")
                    sys.exit(cli.EXIT_USAGE)
                cli.fail("frisky worker", why)
            time.sleep(0.05)  # rejoining: the last connection's port is being released
    raise OSError(f"{_CANNOT_LISTEN} {listen} again")


def _names(args: argparse.Namespace) -> list[str]:
    base = args.name or f"{socket.gethostname()}-{os.getpid()}"
    if args.nworkers == 1:
        return [base]
    return [f"{base}-{i}" for i in range(args.nworkers)]


def run_nanny(args: argparse.Namespace) -> int:
    """This process supervises ``--nworkers`` workers; returns the exit status."""
    from frisky.deploy import zygote
    from frisky.deploy.nanny import Nanny, Supervisor

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.listen_address and args.nworkers > 1 and not args.listen_address.endswith(":0"):
        parser().error("--listen-address names one address: with --nworkers > 1 give port 0 or --host")
    limit = _limit(args)
    common = ["--no-nanny", "--status-fd", "{fd0}", "--nthreads", str(args.nthreads), "--memory-limit", str(limit),
              "--shm-limit", str(config.shm_limit())]
    if args.keys:
        _keys(args)  # unreadable keys: one line now, not a crash loop
        common += ["--keys", args.keys]
    if args.quiet:
        common.append("--quiet")
    if args.listen_address:
        common += ["--listen-address", args.listen_address]
    elif args.host:
        common += ["--host", args.host]
    fork = zygote.get()
    supervisor = Supervisor().start()
    nannies = []

    def spawner(name: str):
        argv = ["worker", args.address, "--name", name, *common]
        return lambda fd: fork.spawn(argv, fds=[fd])

    stopping = []

    def stop(*_) -> None:
        stopping.append(True)
        for n in nannies:
            n.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name in _names(args):
            nannies.append(Nanny(spawner(name), name, limit, restart=args.restart, supervisor=supervisor).start())
        if stopping:  # a signal came while starting
            stop()
        for n in nannies:
            n.wait_stopped()
    finally:
        for n in nannies:
            n.shutdown()
        for n in nannies:
            n.stop(5.0)
        supervisor.stop()
        zygote.shutdown()
    failed = [n for n in nannies if n.status == "failed"]
    if any(_CANNOT_LISTEN in (n.error or "") for n in failed):
        return 2  # a port in use, a refused name: the command line's to fix, as with a bad argument
    return 1 if failed else 0
