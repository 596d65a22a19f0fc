"""One ssh session a host: the only module that knows about ssh.

The session runs the agent (:mod:`.remote`) through a tiny bootstrap on the command line;
everything else, the configuration and the cluster's keys, goes over the session's
stdin as JSON lines, never on a command line. The agent answers with JSON event lines
on stdout; its stderr (and ssh's own) is kept to explain a failure. While the cluster
runs, an empty line every second on stdin tells the agent that the launcher is alive;
closing stdin tells it to stop.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import threading
from collections import deque
from collections.abc import Callable

from frisky.deploy.launch.hosts import HostSpec

logger = logging.getLogger("frisky.launch")

DEFAULT_SSH = "ssh -o BatchMode=yes"

# Runs on the remote host before frisky is imported: reads the first line of stdin, takes
# its environment (PYTHONPATH included), then hands over to the agent.
_BOOT = (
    "import json,os,sys\n"
    "c=json.loads(sys.stdin.buffer.readline() or 'null')\n"
    "if c is None: sys.exit(0)\n"
    "os.environ.update(c['env'])\n"
    "sys.path[:0]=[p for p in c['env'].get('PYTHONPATH','').split(os.pathsep) if p]\n"
    "try:\n"
    " from frisky.deploy.launch.remote import main\n"
    "except ImportError as e:\n"
    " sys.exit(f'frisky cannot be imported by {sys.executable}: {e}')\n"
    "main(c)\n"
)

Event = Callable[["Session", dict], None]


class Session:
    """The agent on one host, reached through ``ssh``; events go to ``on_event``."""

    def __init__(self, spec: HostSpec, ssh: str, python: str, on_event: Event,
                 on_stderr: Callable[[Session, str], None] | None = None) -> None:
        self.spec = spec
        self.ssh = ssh or DEFAULT_SSH
        self.python = python
        self.on_event = on_event
        self.on_stderr = on_stderr
        self.proc: subprocess.Popen | None = None
        self.stderr: deque[str] = deque(maxlen=20)
        self._lock = threading.Lock()
        self.closed = threading.Event()  # stdout ended: the agent (or ssh) is gone
        self.returncode: int | None = None

    @property
    def name(self) -> str:
        return str(self.spec)

    def argv(self) -> list[str]:
        argv = [*shlex.split(self.ssh), "-T"]
        if self.spec.port:
            argv += ["-p", str(self.spec.port)]
        remote = f"exec {shlex.quote(self.python)} -c {shlex.quote(_BOOT)}"
        return [*argv, self.spec.target, remote]

    def start(self, first: dict) -> Session:
        """Start ssh and send the agent its first line (``first``)."""
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:  # no ssh binary: report it as this host's failure
            self.stderr.append(f"cannot run {self.ssh.split()[0]}: {e}")
            self.closed.set()
            self.on_event(self, {"event": "closed", "status": None})
            return self
        self._err_thread = threading.Thread(target=self._read_stderr, daemon=True, name=f"ssh-err-{self.name}")
        self._err_thread.start()
        threading.Thread(target=self._read_stdout, daemon=True, name=f"ssh-out-{self.name}").start()
        self.send(first)
        return self

    def send(self, obj: dict | None) -> bool:
        """Write one JSON line (None: an empty heartbeat line); False if the session is gone."""
        line = b"\n" if obj is None else json.dumps(obj).encode() + b"\n"
        with self._lock:
            if self.proc is None or self.proc.stdin is None or self.proc.stdin.closed:
                return False
            try:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):  # the session ended; its reader reports it
                return False

    def close(self) -> None:
        """Close stdin: the agent stops its processes and exits."""
        with self._lock:
            if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.closed:
                try:
                    self.proc.stdin.close()
                except OSError:  # already broken: the session is ending anyway
                    pass

    def wait(self, timeout: float) -> bool:
        """Wait for ssh to exit; True if it did."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def error(self) -> str:
        """Why the session failed, in ssh's (or the remote shell's) own words."""
        lines = [line for line in self.stderr if line.strip()]
        if lines:
            return lines[-1] if len(lines) == 1 else "; ".join(lines[-3:])
        if self.returncode is not None:
            return f"ssh exited with status {self.returncode}"
        return "the session ended"

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError:  # something on the remote printed to stdout: show it, not parse it
                self._stderr_line(raw.decode(errors="replace").rstrip())
                continue
            self.on_event(self, event)
        self.returncode = self.proc.wait()
        self._err_thread.join(2.0)  # ssh's last words explain why it ended
        self.closed.set()
        self.on_event(self, {"event": "closed", "status": self.returncode})

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr_line(raw.decode(errors="replace").rstrip())

    def _stderr_line(self, line: str) -> None:
        self.stderr.append(line)
        if self.on_stderr is not None:
            self.on_stderr(self, line)
