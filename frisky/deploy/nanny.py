"""Supervision of worker processes: restart the dead, terminate the oversized, stop a crash loop.

One implementation serves every way workers are started: ``frisky worker`` (a nanny
process over its ``--nworkers``), LocalCluster (the user's process supervises its own
workers) and the launcher. A :class:`Nanny` keeps one worker slot filled; a
:class:`Supervisor` thread watches any number of them at once: a pidfd per process says
the moment one exits, and ``/proc/<pid>/statm``, read every ``nanny_memory_interval``
(20 ms, a few microseconds per read), catches a task running away with memory before it
gets far past the limit.

A worker tells its nanny how it is doing over a pipe (``frisky worker --status-fd N``):
``ready`` once the scheduler has welcomed it, ``stop`` just before it exits on purpose,
``fatal <why>`` when restarting it cannot help (a refused name, a bad address). An exit
without ``stop`` is a death whatever its status: a task may well call ``os._exit(0)``.

Crash loop: a worker that dies ``nanny_failed_starts`` times in a row before it
registers with the scheduler is given up on, with the reason. Deaths after registering
are not a loop the nanny can judge (a kill storm, a task that kills its worker): the
scheduler's rule bounds those, failing a task after it killed ``allowed_failures`` workers.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from frisky import config, procs

logger = logging.getLogger("frisky.deploy")



class ProcessLike(Protocol):
    """What a spawn function returns: ``subprocess.Popen`` or the fork server's ``Process``."""

    pid: int

    def send_signal(self, sig: int) -> None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


#: start one worker process, given the write end of its status pipe (to pass on as
#: ``--status-fd``); the caller closes its own copy after the call
Spawn = Callable[[int], ProcessLike]


def describe_exit(proc: ProcessLike) -> str:
    """How ``proc`` ended, as far as we can know (the fork server keeps its children's status)."""
    status = proc.poll()
    if status is None or not getattr(proc, "status_known", True):
        return "exited"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


class Nanny:
    """Keeps one worker process running: restarts it when it dies, kills it over memory.

    ``spawn`` starts the worker (see :data:`Spawn`). ``memory_limit`` in bytes (None: no
    memory watch); the worker is killed once its RSS passes ``memory_terminate`` of it.
    ``on_exit(nanny, pid, reason)`` runs on the supervisor's thread after each exit (to
    sweep what the dead process left). ``start()`` registers with ``supervisor`` (a
    private one, started here, if None).
    """

    def __init__(
        self,
        spawn: Spawn,
        name: str,
        memory_limit: int | None = None,
        *,
        memory_terminate: float | None = None,
        restart: bool = True,
        failed_starts: int | None = None,
        on_exit: Callable[[Nanny, int, str], None] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.spawn = spawn
        self.name = name
        self.memory_limit = memory_limit
        self.terminate_fraction = fraction = config.get("memory_terminate", memory_terminate)
        self.terminate_at = int(memory_limit * fraction) if memory_limit and fraction else None
        self.restart = restart
        self.max_failed_starts = config.get("nanny_failed_starts", failed_starts)
        self.on_exit = on_exit
        self.supervisor = supervisor
        self._own_supervisor = supervisor is None
        self.process: ProcessLike | None = None
        self.status = "new"  # starting | running | stopped | failed
        self.error: str | None = None  # why it was given up on
        self.restarts = 0
        self.failed_starts = 0  # deaths in a row before registering
        self.ready = threading.Event()  # set while the current process is registered
        self.changed = threading.Condition()
        # per process: status pipe, its unread text, what it said, when it started
        self._status_fd: int | None = None
        self._buf = b""
        self._said_stop = False
        self._fatal: str | None = None
        self._killed_for: str | None = None
        self._started_at = 0.0
        self._respawn_at: float | None = None
        self._stopping = False

    # ------------------------------------------------------------- public
    def start(self) -> Nanny:
        """Start the worker and supervise it."""
        if self.supervisor is None:
            self.supervisor = Supervisor().start()
        self._launch()
        self.supervisor.add(self)
        return self

    def shutdown(self, sig: int = signal.SIGTERM) -> None:
        """Start no more processes and send ``sig`` to the current one; returns at once."""
        self._stopping = True
        self.restart = False
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """Stop supervising; signal the worker and wait for it (SIGKILL after ``timeout``)."""
        self.shutdown(sig)
        proc = self.process
        self.wait_stopped(timeout)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            self.wait_stopped(2.0)
        if self._own_supervisor and self.supervisor is not None:
            self.supervisor.stop()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until this nanny will start no more processes (stopped or failed)."""
        with self.changed:
            return self.changed.wait_for(lambda: self.status in ("stopped", "failed"), timeout)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def __repr__(self) -> str:
        return f"<Nanny {self.name} pid={self.pid} {self.status} restarts={self.restarts}>"

    # ------------------------------------------- the supervisor's thread
    def _launch(self) -> None:
        r, w = os.pipe()
        try:
            proc = self.spawn(w)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        os.set_blocking(r, False)
        self._status_fd, self._buf = r, b""
        self._said_stop, self._fatal, self._killed_for = False, None, None
        self._started_at = time.monotonic()
        self.ready.clear()
        self.process = proc
        self._set_status("starting")

    def _set_status(self, status: str) -> None:
        with self.changed:
            self.status = status
            self.changed.notify_all()

    def _read_status(self) -> bool:
        """Read what the worker said; False once the pipe is at its end."""
        fd = self._status_fd
        if fd is None:
            return False
        while True:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                self._close_status()
                return False
            self._buf += data
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                self._said(line.decode(errors="replace").strip())

    def _said(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "ready":
            self.failed_starts = 0
            self.ready.set()
            self._set_status("running")
        elif word == "stop":
            self._said_stop = True
        elif word == "fatal":
            self._fatal = rest or "no reason given"
        elif line:
            logger.warning("worker %s said something unexpected on its status pipe: %r", self.name, line[:200])

    def _close_status(self) -> None:
        if self._status_fd is not None:
            os.close(self._status_fd)
            self._status_fd = None

    def _check_memory(self) -> None:
        proc = self.process
        if self.terminate_at is None or proc is None or self._killed_for is not None:
            return
        used = procs.rss(proc.pid)
        if used is not None and used > self.terminate_at:
            self._killed_for = (f"its memory use {used / 2**20:.0f} MiB passed {self.terminate_at / 2**20:.0f} MiB "
                                f"({self.terminate_fraction:.0%} of its {self.memory_limit / 2**20:.0f} MiB limit)")
            logger.warning("worker %s (pid %d): %s: killing it", self.name, proc.pid, self._killed_for)
            proc.send_signal(signal.SIGKILL)

    def _exited(self) -> None:
        """The process is gone: decide whether to start another."""
        proc = self.process
        proc.wait()
        self._read_status()
        self._close_status()
        self.ready.clear()
        uptime = time.monotonic() - self._started_at
        reason = self._killed_for or ("stopped" if self._said_stop else describe_exit(proc))
        if self.on_exit is not None:
            try:
                self.on_exit(self, proc.pid, reason)
            except Exception:  # noqa: BLE001 - a cleanup hook must not stop supervision
                logger.exception("worker %s: exit hook failed", self.name)
        if self._stopping or self._said_stop:
            self._set_status("stopped")
            return
        if self._fatal is not None:
            self.error = f"worker {self.name} cannot start: {self._fatal}"
            logger.error("%s; not restarting it", self.error)
            self._set_status("failed")
            return
        if not self.restart:
            logger.warning("worker %s (pid %d) %s; not restarting it", self.name, proc.pid, reason)
            self._set_status("stopped")
            return
        if self.status == "starting":
            self.failed_starts += 1
            if self.failed_starts >= self.max_failed_starts:
                self.error = (f"worker {self.name} died {self.failed_starts} times in a row before it could register "
                              f"with the scheduler (last: {reason}, {uptime:.1f} s after start); not restarting it")
                logger.error(self.error)
                self._set_status("failed")
                return
        logger.warning("worker %s (pid %d) %s after %.1f s; restarting it", self.name, proc.pid, reason, uptime)
        # deaths in a row before registering back off: 0.1, 0.2, 0.4 ... s
        delay = 0.0 if not self.failed_starts else min(5.0, 0.05 * 2 ** self.failed_starts)
        self._respawn_at = time.monotonic() + delay

    def _respawn(self) -> None:
        self._respawn_at = None
        if self._stopping or not self.restart:
            self._set_status("stopped")
            return
        try:
            self._launch()
        except OSError as e:  # the fork server is gone: this process is exiting
            self.error = f"cannot restart worker {self.name}: {e}"
            logger.error(self.error)
            self._set_status("failed")
            return
        self.restarts += 1


class Supervisor:
    """One thread that watches any number of nannies (and other processes).

    ``watch(proc, callback)`` also tells ``callback(proc)`` when a process that is not a
    worker exits (LocalCluster's scheduler).
    """

    def __init__(self, memory_interval: float | None = None) -> None:
        self.interval = config.get("nanny_memory_interval", memory_interval)
        self.nannies: list[Nanny] = []
        self._others: list[tuple[Any, Callable]] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name="frisky-nanny", daemon=True)
        self._thread.start()
        return self

    def add(self, nanny: Nanny) -> None:
        with self._lock:
            self.nannies.append(nanny)
        self._wake()

    def watch(self, proc: Any, callback: Callable[[Any], None]) -> None:
        with self._lock:
            self._others.append((proc, callback))
        self._wake()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop watching (the processes are left alone: stop the nannies first)."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):  # full (a wake-up is pending anyway) or closed
            pass

    def _run(self) -> None:
        pidfds: dict[int, int] = {}  # pid -> pidfd
        try:
            while not self._closed:
                self._loop_once(pidfds)
        except Exception:  # noqa: BLE001 - supervision must say why it stopped
            logger.exception("the worker supervisor failed")
        finally:
            for fd in pidfds.values():
                os.close(fd)

    def _pidfd(self, pidfds: dict[int, int], pid: int) -> int | None:
        fd = pidfds.get(pid)
        if fd is None:
            try:
                fd = pidfds[pid] = os.pidfd_open(pid)
            except OSError:  # already gone (reaped by the fork server): treat as exited
                return None
        return fd

    def _loop_once(self, pidfds: dict[int, int]) -> None:
        with self._lock:
            nannies = [n for n in self.nannies if n.status not in ("stopped", "failed")]
            self.nannies = nannies
            others = list(self._others)
        fds: dict[int, tuple[str, Any]] = {}
        gone: list[tuple[str, Any]] = []
        now = time.monotonic()
        timeout = None
        for n in nannies:
            if n._respawn_at is not None:
                if n._respawn_at > now:
                    wait = n._respawn_at - now
                    timeout = wait if timeout is None else min(timeout, wait)
                    continue
                n._respawn()
            if n.process is None or n.status in ("stopped", "failed"):
                continue
            fd = self._pidfd(pidfds, n.process.pid)
            if fd is None:
                gone.append(("exit", n))
            else:
                fds[fd] = ("exit", n)
            if n._status_fd is not None:
                fds[n._status_fd] = ("status", n)
            if n.terminate_at is not None:
                timeout = self.interval if timeout is None else min(timeout, self.interval)
        for proc, cb in others:
            fd = self._pidfd(pidfds, proc.pid)
            if fd is None:
                gone.append(("other", (proc, cb)))
            else:
                fds[fd] = ("other", (proc, cb))
        if not gone:
            ready, _, _ = select.select([self._wake_r, *fds], [], [], timeout)
            for fd in ready:
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:  # drained already by an earlier wake-up
                        pass
                    continue
                kind, what = fds[fd]
                if kind == "status":
                    what._read_status()
                else:
                    gone.append((kind, what))
        if self._closed:
            return
        for kind, what in gone:
            if kind == "exit":
                pid = what.process.pid
                fd = pidfds.pop(pid, None)
                if fd is not None:
                    os.close(fd)
                what._exited()
            else:
                proc, cb = what
                fd = pidfds.pop(proc.pid, None)
                if fd is not None:
                    os.close(fd)
                with self._lock:
                    self._others = [o for o in self._others if o[0] is not proc]
                cb(proc)
        for n in nannies:
            if n.status in ("starting", "running") and n._respawn_at is None:
                n._check_memory()
