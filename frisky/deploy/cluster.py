"""LocalCluster: a scheduler and workers on this machine, as processes or threads.

Processes talk over ``ipc://`` sockets in a private 0700 directory (or TCP when asked);
this process supervises its workers itself (:mod:`frisky.deploy.nanny`: restarts, memory
terminate, crash loops), one thread for all of them, which also notices the scheduler's exit.
``processes=False`` runs everything as threads over ``inproc://`` and passes objects
by reference, never pickling them.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import threading
import time
from typing import Any

import zmq

from frisky import config, protocol
from frisky.deploy.nanny import Nanny, Supervisor, describe_exit
from frisky.protocol import unpack
from frisky.zmq import sockets

logger = logging.getLogger("frisky.deploy")
_TRANSPORTS = {True: ("ipc", "tcp"), False: ("inproc", "tcp")}  # by processes=


class LocalCluster:
    """Start a scheduler and ``n_workers`` workers here; a context manager.

    Use ``cluster.get_client()`` or ``frisky.Client(cluster)``; other processes can
    join with ``frisky.Client(cluster.scheduler_address)``. Given neither ``n_workers`` nor
    ``threads_per_worker``, as with dask: a single-threaded worker process per core, or with
    ``processes=False`` one worker with a thread per core. ``dashboard_address``: where the
    dashboard and its JSON API listen (default ``":8787"``, the ``dashboard_address``
    setting; a taken port falls back to a free one; None disables); see ``dashboard_link``.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        memory_limit: str | int | float | None = "auto",
        scheduler_port: int = 0,
        dashboard_address: str | None = config.UNSET,
        *,
        transport: str | None = None,
        host: str | None = None,
        timeout: float | None = None,
        restart_workers: bool = True,
    ) -> None:
        if n_workers is None and threads_per_worker is None and not processes:
            # as dask does: threads share one GIL, so one worker with a thread per core
            n_workers, threads_per_worker = 1, os.cpu_count() or 1
        if n_workers is None:
            n_workers = os.cpu_count() or 1
        if threads_per_worker is None:
            threads_per_worker = 1
        if n_workers < 0:
            raise ValueError(f"n_workers must be >= 0, not {n_workers}")
        if threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be >= 1, not {threads_per_worker}")
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        if transport is not None and transport not in _TRANSPORTS[bool(processes)]:
            raise ValueError(f"transport must be one of {', '.join(_TRANSPORTS[bool(processes)])} "
                             f"with processes={bool(processes)}, not {transport!r}")
        total = config.total_memory()
        limit = config.parse_memory_limit(memory_limit, total)
        self.memory_limit = total // max(1, n_workers) if limit is None else limit
        self.shm_limit = config.shm_limit()  # the host's arena budget, shared by the workers
        self.host = host or config.get("host")
        self.timeout = config.get("connect_timeout", timeout)
        self._restart_workers = restart_workers
        self._nannies: dict[str, Nanny] = {}
        self._supervisor: Supervisor | None = None
        self.status = "starting"
        self._closed = False
        self._ipc_dir: str | None = None
        self._scheduler_proc: subprocess.Popen | None = None
        self._threads: list = []
        self._lock = threading.Lock()
        self.table = None
        self.scheduler = None
        from frisky.shm import new_cluster_id

        self.cluster_id = new_cluster_id()
        if transport is None:
            transport = "tcp" if scheduler_port else ("ipc" if processes else "inproc")
        self.transport = transport
        dashboard_address = config.dashboard_address(dashboard_address)
        self._dashboard_link: str | None = None
        try:
            if processes:
                self._start_processes(scheduler_port, dashboard_address)
            else:
                self._start_threads(scheduler_port, dashboard_address)
        except BaseException:
            self.close()
            raise
        self.status = "running"

    # ---------------------------------------------------------------- threads
    def _start_threads(self, port: int, dashboard_address: str | None) -> None:
        from frisky.data.serialize import LocalCodec, ObjectTable
        from frisky.scheduler.server import SchedulerServer
        from frisky.worker.server import Worker

        self.ctx = zmq.Context()
        self.table = ObjectTable()
        if self.transport == "inproc":
            address = f"inproc://frisky-{self.cluster_id}"
        else:
            address = f"tcp://{self.host}:{port}"
        self.scheduler = SchedulerServer(address, ctx=self.ctx, cluster_id=self.cluster_id,
                                         local_table=self.table, dashboard_address=dashboard_address).start()
        self.scheduler_address = self.scheduler.address
        for i in range(self.n_workers):
            listen = f"inproc://frisky-{self.cluster_id}-w{i}"
            w = Worker(self.scheduler_address, name=str(i), nthreads=self.threads_per_worker,
                       memory_limit=self.memory_limit, shm_limit=self.shm_limit, listen_address=listen, ctx=self.ctx,
                       codec=LocalCodec(self.table))
            self._threads.append(w.start())
        # each worker has its welcome, so the scheduler has it: no round trip of our own
        deadline = time.monotonic() + self.timeout
        for w in self._threads:
            if not w.started.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{self.n_workers} workers did not start within {self.timeout}s")
            if w.error is not None:
                raise w.error

    def codec(self):
        """The codec clients of this cluster use (by reference in-process, pickles otherwise)."""
        from frisky.data.serialize import LocalCodec, PickleCodec

        return LocalCodec(self.table) if self.table is not None else PickleCodec()

    # -------------------------------------------------------------- processes
    def _start_processes(self, port: int, dashboard_address: str | None) -> None:
        from frisky.deploy import zygote

        self.ctx = zmq.Context.instance()
        sockets.sweep_ipc_dirs()  # of clusters whose owner and fork server were both killed
        from frisky.shm import sweep

        sweep()  # and their arenas and segments in /dev/shm (kill -9 of the whole tree)
        self._ipc_dir = sockets.private_ipc_dir()
        self._zygote = zygote.get()
        # should this process end without closing us, the fork server tidies up after it
        self._zygote.tidy_up(self._ipc_dir, self.cluster_id)
        argv = ["scheduler", "--cluster-id", self.cluster_id, "--quiet",
                "--dashboard-address", dashboard_address or "none"]
        if self.transport == "ipc":
            self.scheduler_address = f"ipc://{self._ipc_dir}/scheduler"
            self._scheduler_proc = self._zygote.spawn(argv + ["--address", self.scheduler_address])
        else:
            # the scheduler picks its port and writes its address into this pipe
            r, w = os.pipe()
            try:
                self._scheduler_proc = self._zygote.spawn(
                    argv + ["--address", f"tcp://{self.host}:{port}", "--announce-fd", "{fd0}"], fds=[w])
            finally:
                os.close(w)
            self.scheduler_address = self._read_address(r)
        # one thread supervises every worker (and notices the scheduler's exit)
        self._supervisor = Supervisor().start()
        self._supervisor.watch(self._scheduler_proc, self._scheduler_exited)
        for i in range(self.n_workers):
            self._spawn_worker(str(i))
        self._wait_workers(self.n_workers)
        if dashboard_address:
            self._dashboard_link = self._ask_info().get("dashboard")

    def _ask_info(self) -> dict:
        """The scheduler's ``info`` (asked once, at start-up)."""
        s = sockets.dealer(self.ctx, self.scheduler_address)
        try:
            s.send_multipart([protocol.header(protocol.INFO, 0)])
            if not s.poll(int(self.timeout * 1000)):
                raise TimeoutError(f"the scheduler did not answer within {self.timeout}s")
            msg = protocol.parse_to_client(s.recv_multipart())
            return msg.value if type(msg) is protocol.Reply and isinstance(msg.value, dict) else {}
        finally:
            s.close(0)

    def _read_address(self, fd: int) -> str:
        try:
            if not select.select([fd], [], [], self.timeout)[0]:
                raise TimeoutError("the scheduler process did not start")
            line = os.read(fd, 4096).decode().strip()
        finally:
            os.close(fd)
        if not line:
            raise TimeoutError("the scheduler process exited before binding")
        return line

    def _worker_argv(self, name: str) -> list[str]:
        if self.transport == "ipc":
            listen = f"ipc://{self._ipc_dir}/w-{name}"
        else:
            listen = f"tcp://{self.host}:0"
        return ["worker", self.scheduler_address, "--no-nanny", "--quiet", "--status-fd", "{fd0}",
                "--name", name, "--nthreads", str(self.threads_per_worker),
                "--memory-limit", str(self.memory_limit), "--shm-limit", str(self.shm_limit),
                "--listen-address", listen]

    def _spawn_worker(self, name: str) -> None:
        argv = self._worker_argv(name)
        nanny = Nanny(lambda fd: self._zygote.spawn(argv, fds=[fd]), name, self.memory_limit,
                      restart=self._restart_workers, on_exit=self._worker_exited, supervisor=self._supervisor)
        with self._lock:
            self._nannies[name] = nanny
        nanny.start()

    def _worker_exited(self, nanny: Nanny, pid: int, reason: str) -> None:
        from frisky.shm import sweep_owner

        sweep_owner(self.cluster_id, pid)

    def _scheduler_exited(self, proc) -> None:
        """The scheduler is gone: say so once, and start no more workers (they cannot join)."""
        if self._closed:
            return
        self.status = "failed"
        logger.error("frisky LocalCluster: the scheduler (pid %d) %s; stopping the workers, no more are started",
                     proc.pid, describe_exit(proc))
        with self._lock:
            nannies = list(self._nannies.values())
        for n in nannies:
            n.shutdown()

    @property
    def restart_workers(self) -> bool:
        """Whether workers that die are started again (their nannies restart them)."""
        return self._restart_workers

    @restart_workers.setter
    def restart_workers(self, value: bool) -> None:
        self._restart_workers = value
        with self._lock:
            for n in self._nannies.values():
                n.restart = value

    def _wait_workers(self, n: int) -> None:
        if n == 0:
            return
        ctx = self.ctx
        s = sockets.dealer(ctx, self.scheduler_address)
        try:
            s.send_multipart([protocol.header(protocol.WAIT_WORKERS, 0, n, self.timeout)])
            if not s.poll(int(self.timeout * 1000) + 500):
                raise TimeoutError(f"{n} workers did not start within {self.timeout}s")
            msg = unpack(s.recv_multipart()[0])
            if msg[2] is not True:
                raise TimeoutError(f"{n} workers did not start within {self.timeout}s")
        finally:
            s.close(0)

    # ---------------------------------------------------------------- public
    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's URL (its JSON API under ``/api/v1``), or None if it is disabled."""
        if self.scheduler is not None and self.scheduler.dashboard is not None:
            return self.scheduler.dashboard.address
        return self._dashboard_link

    def get_client(self, **kwargs):
        """A :class:`~frisky.client.client.Client` connected to this cluster."""
        import frisky  # the public name: deploy never imports the client's modules (no cycle)

        return frisky.Client(self, **kwargs)

    @property
    def workers(self) -> dict[str, Any]:
        """Worker name -> process (or thread worker)."""
        if self.processes:
            with self._lock:
                return {name: n.process for name, n in self._nannies.items()}
        return {w.name: w for w in self._threads}

    def close(self, timeout: float = 5.0) -> None:
        """Stop every worker and the scheduler; remove sockets, segments and spill files."""
        if self._closed:
            return
        self._closed = True
        self.status = "closing"
        if self.processes:
            self._close_processes(timeout)
        else:
            # all at once, the scheduler too: each stops in parallel with the others
            for w in self._threads:
                w.stop(0)
            if self.scheduler is not None:
                self.scheduler.stop(0)
            for w in self._threads:
                w.stop(timeout)
            if self.scheduler is not None:
                self.scheduler.stop(timeout)
            if self.table is not None:
                self.table.clear()
            if getattr(self, "ctx", None) is not None:
                self.ctx.term()
            self.status = "closed"
            return  # in-process workers use neither shared memory nor spill files
        sockets.remove_dir(self._ipc_dir)
        from frisky import spill
        from frisky.shm import sweep

        sweep(self.cluster_id)
        spill.sweep()  # spill directories of workers that died without cleaning up
        if getattr(self, "_zygote", None) is not None:
            self._zygote.forget(self.cluster_id)
        self.status = "closed"

    def _close_processes(self, timeout: float) -> None:
        # all at once: workers and scheduler stop in parallel
        with self._lock:
            nannies = list(self._nannies.values())
        for n in nannies:
            n.shutdown()
        sched = self._scheduler_proc
        if sched is not None and sched.poll() is None:
            sched.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for n in nannies:
            if not n.wait_stopped(max(0.0, deadline - time.monotonic())) and n.process is not None:
                n.process.send_signal(signal.SIGKILL)
                n.wait_stopped(2.0)
        if sched is not None:
            try:
                sched.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                sched.kill()
                sched.wait()
        if self._supervisor is not None:
            self._supervisor.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close(timeout=1.0)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def __repr__(self) -> str:
        kind = "processes" if self.processes else "threads"
        return f"<frisky.LocalCluster {self.scheduler_address} workers={self.n_workers} {kind} {self.status}>"
