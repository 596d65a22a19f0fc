"""A fork server: one warm process with Frisky imported that forks schedulers and workers.

Starting Python and importing zmq/msgpack costs ~200 ms here; forking a process that
already has them costs milliseconds. The zygote never creates a ZeroMQ context or a
thread, so forking it is safe (forking a process that holds a context deadlocks).

Requests travel over a SOCK_SEQPACKET socketpair: a JSON command (argv, sys.path,
cwd, environment) plus optional file descriptors; the answer is the child's pid. The
zygote exits when its parent closes the socket (or dies). It then stops its children
(SIGTERM, SIGKILL after a few seconds; they also get SIGTERM should it die itself,
PR_SET_PDEATHSIG) and removes what clusters left open by the parent leave behind: their
ipc directories, shared memory and spill files, so that nothing outlives a user's
process that exits without closing, or is killed.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading

from frisky.deploy import malloc_tuning

_MAX_MSG = 1 << 20
_TIDY_SECONDS = 3.0  # how long the fork server waits for its children to exit before SIGKILL


class Process:
    """A process forked by the zygote: ``Popen``-like, watched through a pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        # a cluster's watcher thread and its caller may wait at once: the pidfd is closed
        # under the lock, and waited on through a duplicate, so no thread ever selects on
        # (or closes) a descriptor number that was closed and reused meanwhile
        self._lock = threading.Lock()
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except OSError:  # already gone
            self._fd = None
        self.returncode: int | None = None
        self.status_known = False  # the fork server reaps it: returncode is 0 whatever the status

    def fileno(self) -> int | None:
        return self._fd

    def poll(self) -> int | None:
        if self.returncode is None:
            with self._lock:
                gone = self._fd is None or select.select([self._fd], [], [], 0)[0]
            if gone:
                self._exited()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            with self._lock:
                fd = None if self._fd is None else os.dup(self._fd)
            if fd is not None:
                try:
                    ready = select.select([fd], [], [], timeout)[0]
                finally:
                    os.close(fd)
                if not ready:
                    raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            self._exited()
        return self.returncode  # type: ignore[return-value]

    def _exited(self) -> None:
        with self._lock:
            self.returncode = 0  # not our child: the zygote reaps it and keeps the status
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # exited meanwhile: nothing left to signal
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    stdout = None


class Zygote:
    """The parent's handle on the fork server."""

    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # let our children cache bytecode
        malloc_tuning.set_env(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "frisky.deploy.zygote", str(child.fileno())],
            pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL,
        )
        child.close()
        self.sock = parent
        self.lock = threading.Lock()

    def spawn(self, argv: list[str], fds: list[int] = (), env: dict | None = None) -> Process:
        """Fork a child running ``frisky <argv>``; ``fds`` are passed to it (see ``passed_fds``)."""
        cmd = {"argv": argv, "path": sys.path, "cwd": os.getcwd(), "env": dict(env or os.environ)}
        with self.lock:
            socket.send_fds(self.sock, [json.dumps(cmd).encode()], list(fds))
            reply = self.sock.recv(_MAX_MSG)
        if not reply:
            raise OSError("the Frisky fork server exited")
        return Process(json.loads(reply)["pid"])

    def tidy_up(self, ipc_dir: str | None, cluster_id: str) -> None:
        """Should this process end without closing its cluster (an exception, SIGTERM,
        SIGKILL), the fork server stops the cluster's processes and removes its ipc
        directory, shared memory and spill files once it sees this process gone."""
        self._command({"op": "tidy", "dir": ipc_dir, "cluster": cluster_id})

    def forget(self, cluster_id: str) -> None:
        """The cluster closed itself: nothing left to tidy for it."""
        try:
            self._command({"op": "forget", "cluster": cluster_id})
        except OSError:  # the fork server is gone already: nothing to forget
            pass

    def _command(self, cmd: dict) -> dict:
        with self.lock:
            self.sock.send(json.dumps(cmd).encode())
            reply = self.sock.recv(_MAX_MSG)
        if not reply:
            raise OSError("the Frisky fork server exited")
        return json.loads(reply)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.sock.close()
        try:
            # it may first stop the processes of clusters left open (a few seconds at most)
            self.proc.wait(_TIDY_SECONDS + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_zygote: Zygote | None = None
_lock = threading.Lock()


def get() -> Zygote:
    """This process's fork server, started on first use."""
    global _zygote
    with _lock:
        if _zygote is None or not _zygote.alive():
            _zygote = Zygote()
        return _zygote


def shutdown() -> None:
    """Stop the fork server (at exit, or to leave no process behind)."""
    global _zygote
    with _lock:
        z, _zygote = _zygote, None
    if z is not None:
        z.close()


atexit.register(shutdown)

# ---------------------------------------------------------------- the zygote side
passed_fds: list[int] = []  # in a forked child: the descriptors sent with its command


_children: set[int] = set()  # in the fork server: children not reaped yet


class _Stop(Exception):
    """SIGTERM to the fork server: tidy up as if the parent had gone."""


def _reap(*_) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _children.discard(pid)


def _stop(*_) -> None:
    raise _Stop


def _tidy(clusters: dict[str, str | None]) -> None:
    """The parent is gone: stop every child, then remove what left-open clusters left."""
    import time

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _reap()
    for pid in list(_children):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            _children.discard(pid)
    deadline = time.monotonic() + _TIDY_SECONDS
    while _children and time.monotonic() < deadline:
        _reap()
        if _children:
            time.sleep(0.01)  # polling waitpid: no pidfd needed, and this runs once, at the end
    for pid in list(_children):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):  # exited and reaped meanwhile
            pass
        _children.discard(pid)
    if not clusters:
        return
    import shutil

    from frisky import spill
    from frisky.shm import sweep

    for cluster_id, ipc_dir in clusters.items():
        if ipc_dir:
            shutil.rmtree(ipc_dir, ignore_errors=True)
        sweep(cluster_id)
    spill.sweep()  # spill directories of the workers stopped above


def _child(sock: socket.socket, cmd: dict, fds: list[int]) -> None:
    sock.close()
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    passed_fds[:] = fds
    os.environ.clear()
    os.environ.update(cmd["env"])
    sys.path[:] = cmd["path"]
    os.chdir(cmd["cwd"])
    import random

    random.seed()
    from frisky.procs import die_with_parent

    die_with_parent()
    code = 0
    try:
        from frisky.cli.main import main

        main([str(fds[0]) if a == "{fd0}" and fds else a for a in cmd["argv"]])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - report and exit non-zero
        import logging

        logging.getLogger("frisky.deploy").exception("frisky %s failed", " ".join(map(str, cmd["argv"])))
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def serve(fd: int) -> None:
    """The fork server's loop: preload, then fork one child per request until EOF."""
    import ctypes  # noqa: F401 - preload: children use these at once
    import ctypes.util  # noqa: F401
    import encodings.idna  # noqa: F401 - the dashboard's host name
    import pickle  # noqa: F401

    import cloudpickle  # noqa: F401

    import frisky.cli.args  # noqa: F401
    import frisky.cli.main  # noqa: F401
    import frisky.cli.worker  # noqa: F401 - and argparse: ~7 ms a worker
    import frisky.dashboard.server  # noqa: F401 - http.server, email, ...: ~22 ms a scheduler
    import frisky.scheduler.server  # noqa: F401
    import frisky.shm  # noqa: F401
    import frisky.worker.server  # noqa: F401

    try:  # tasks use it often; importing once here saves every worker ~70 ms
        import numpy  # noqa: F401
    except ImportError:  # numpy is optional: workers without it just start without it
        pass

    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent; it closes us
    signal.signal(signal.SIGTERM, _stop)
    clusters: dict[str, str | None] = {}  # cluster id -> ipc dir, to tidy if the parent dies
    try:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(sock, _MAX_MSG, 8)
            except InterruptedError:
                continue
            except OSError:
                break
            if not msg:
                break
            cmd = json.loads(msg)
            op = cmd.get("op", "spawn")
            if op == "tidy":
                clusters[cmd["cluster"]] = cmd["dir"]
                sock.send(b'{"ok": true}')
                continue
            if op == "forget":
                clusters.pop(cmd["cluster"], None)
                sock.send(b'{"ok": true}')
                continue
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # reaped only once recorded
            pid = os.fork()
            if pid == 0:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
                _child(sock, cmd, fds)
            _children.add(pid)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
            for f in fds:
                os.close(f)
            sock.send(json.dumps({"pid": pid}).encode())
    except _Stop:  # SIGTERM or the parent gone: tidy up below
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # tidying up is not interrupted twice
    _tidy(clusters)
    os._exit(0)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
