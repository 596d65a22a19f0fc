"""Fake hosts on this machine, for tests and for trying ``frisky-launch``: each a network
namespace with its own hostname (UTS namespace), its own ``/dev/shm`` and ``/tmp``
(private tmpfs mounts in a mount namespace) and a real OpenSSH server.

Layout: a bridge in a namespace of its own joins the hosts (198.18.0.11, .12, …) and a
"head" namespace (198.18.0.1) from which the launcher and clients run. 198.18.0.0/15 is
the RFC 2544 benchmarking range; nothing here has a route anywhere else, and the root
namespace is never touched, so concurrent runs cannot see each other.

Needs root, ``ip``, ``unshare``, ``nsenter``, ``ssh``, ``ssh-keygen`` and ``sshd``;
:func:`unavailable` says why not when something is missing. :meth:`FakeHosts.close`
removes everything it made (processes, namespaces, the key directory), also after a
failed start.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence

SSHD = "/usr/sbin/sshd"
SUBNET = "198.18.0"
HEAD_ADDRESS = f"{SUBNET}.1"
TOOLS = ("ip", "unshare", "nsenter", "ssh", "ssh-keygen")


def unavailable() -> str | None:
    """Why fake hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "fake hosts need root (network namespaces, mounts)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not os.path.exists(SSHD):
        missing.append(SSHD + " (Debian: apt-get install openssh-server)")
    if missing:
        return "fake hosts need " + ", ".join(missing)
    return None


def _run(argv: Sequence[str], timeout: float = 10.0) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


class Host:
    """One fake host: its name, address, namespace and sshd process."""

    def __init__(self, name: str, address: str, netns: str) -> None:
        self.name = name
        self.address = address
        self.netns = netns
        self.sshd: subprocess.Popen | None = None
        self.log: list[str] = []
        self.listening = threading.Event()

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address}>"


class FakeHosts:
    """``n`` fake hosts named ``h1`` … ``hn``; use as a context manager."""

    def __init__(self, n: int = 3, *, directory: str | None = None) -> None:
        self.n = n
        self.tag = f"fh{os.getpid():x}{secrets.token_hex(2)}"
        self.bridge_ns = f"{self.tag}-br"
        self.head_ns = f"{self.tag}-head"
        # not under /tmp: each host mounts its own /tmp, and sshd reads the keys from here
        self.dir = tempfile.mkdtemp(prefix="fakehosts-", dir=directory or "/var/tmp")
        self.hosts = [Host(f"h{i}", f"{SUBNET}.{10 + i}", f"{self.tag}-h{i}") for i in range(1, n + 1)]
        self.namespaces: list[str] = []
        self.ssh_config = os.path.join(self.dir, "ssh_config")
        self.client_key = os.path.join(self.dir, "client_key")

    # ------------------------------------------------------------------ setup
    def __enter__(self) -> FakeHosts:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def ssh(self) -> str:
        """The ``--ssh`` command that reaches these hosts by name."""
        return f"ssh -F {self.ssh_config}"

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def start(self, timeout: float = 10.0) -> FakeHosts:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self._netns(self.bridge_ns)
        _run(["ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.bridge_ns, "link", "set", "br0", "up"])
        self._netns(self.head_ns)
        self._plug(self.head_ns, "phead", HEAD_ADDRESS)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "frisky-fakehosts", "-f", self.client_key])
        known, config = [], []
        for i, h in enumerate(self.hosts, 1):
            self._netns(h.netns)
            self._plug(h.netns, f"p{i}", h.address)
            key = os.path.join(self.dir, f"{h.name}_host_key")
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", key])
            with open(key + ".pub") as f:
                known.append(f"{h.name},{h.address} {f.read().strip()}")
            config.append(f"Host {h.name}\n  HostName {h.address}\n")
        shutil.copy(self.client_key + ".pub", os.path.join(self.dir, "authorized_keys"))
        with open(os.path.join(self.dir, "known_hosts"), "w") as f:
            f.write("\n".join(known) + "\n")
        config.append(
            "Host *\n"
            f"  User {_user()}\n"
            f"  IdentityFile {self.client_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.dir}/known_hosts\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 5\n"
            "  LogLevel ERROR\n"
        )
        with open(self.ssh_config, "w") as f:
            f.write("".join(config))
        for h in self.hosts:
            self._sshd(h)
        for h in self.hosts:
            if not h.listening.wait(timeout):
                raise RuntimeError(f"sshd on {h.name} did not start: {' | '.join(h.log[-5:])}")
        return self

    def _netns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _plug(self, netns: str, port: str, address: str) -> None:
        """A veth pair: ``eth0`` with ``address`` in ``netns``, ``port`` on the bridge."""
        _run(["ip", "-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns])
        _run(["ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up"])
        _run(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0"])
        _run(["ip", "-n", netns, "link", "set", "eth0", "up"])

    def _sshd(self, h: Host) -> None:
        cfg = os.path.join(self.dir, f"{h.name}_sshd_config")
        with open(cfg, "w") as f:
            f.write(
                f"ListenAddress {h.address}\n"
                f"HostKey {self.dir}/{h.name}_host_key\n"
                f"AuthorizedKeysFile {self.dir}/authorized_keys\n"
                "PidFile none\nUsePAM no\nPermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "StrictModes no\nPrintMotd no\nLogLevel INFO\nMaxStartups 100\nMaxSessions 100\n"
            )
        # a private /tmp hides whatever lives under the real one, the interpreter's own
        # code included when it runs from a checkout there: bind those paths back
        stage = os.path.join(self.dir, f"{h.name}_tmp")
        os.makedirs(stage, exist_ok=True)
        keep = _paths_under_tmp()
        rebind = "".join(f" && mkdir -p {shlex.quote(p)} && mount --bind {shlex.quote(stage + p[4:])} "
                         f"{shlex.quote(p)}" for p in keep)
        script = (
            f"hostname {h.name} && mount -t tmpfs -o mode=1777 tmpfs /dev/shm && "
            f"mount --bind /tmp {shlex.quote(stage)} && "
            f"mount -t tmpfs -o mode=1777 tmpfs /tmp{rebind} && exec {SSHD} -D -e -f {cfg}"
        )
        argv = ["ip", "netns", "exec", h.netns, "unshare", "--uts", "--mount", "--propagation", "private",
                "--", "sh", "-c", script]
        h.sshd = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_log, args=(h,), daemon=True).start()

    @staticmethod
    def _read_log(h: Host) -> None:
        for line in h.sshd.stderr:
            h.log.append(line.rstrip())
            if "Server listening" in line:
                h.listening.set()

    # ------------------------------------------------------------------ use
    def head(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run in the head namespace (where the launcher runs)."""
        return ["ip", "netns", "exec", self.head_ns, *argv]

    def on_host(self, host: Host | str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside ``host`` (its network, mounts and hostname)."""
        h = self.host(host)
        return ["nsenter", "-t", str(h.sshd.pid), "-n", "-m", "-u", "--", *argv]

    def host(self, host: Host | str) -> Host:
        if isinstance(host, Host):
            return host
        return next(h for h in self.hosts if h.name == host)

    def pids(self, host: Host | str) -> list[int]:
        """Processes in ``host``'s network namespace other than its sshd listener."""
        h = self.host(host)
        out = subprocess.run(["ip", "netns", "pids", h.netns], capture_output=True, text=True, check=False).stdout
        return [int(p) for p in out.split() if int(p) != h.sshd.pid]

    def leftovers(self, host: Host | str) -> list[str]:
        """Frisky's files left in ``host``'s ``/dev/shm`` and ``/tmp``."""
        out = subprocess.run(self.on_host(host, ["sh", "-c", "ls -d /dev/shm/frisky-* /tmp/frisky-* 2>/dev/null"]),
                             capture_output=True, text=True, check=False).stdout
        return out.split()

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Kill every process in the hosts' namespaces, delete the namespaces and the keys."""
        for h in self.hosts:
            if h.netns not in self.namespaces:
                continue
            for pid in [*self.pids(h), *([h.sshd.pid] if h.sshd else [])]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # already gone
                    continue
            if h.sshd is not None:
                h.sshd.wait(5)
        for ns in [self.head_ns, self.bridge_ns]:
            if ns in self.namespaces:
                out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
                for pid in out.stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        continue
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _paths_under_tmp() -> list[str]:
    """The directories under /tmp that Python needs (sys.path entries, frisky itself)."""
    import frisky

    found = {os.path.dirname(os.path.dirname(os.path.abspath(frisky.__file__)))}
    found.update(os.path.abspath(p) for p in sys.path if p)
    out = sorted(p for p in found if p.startswith("/tmp/") and os.path.isdir(p))
    # the outermost ones suffice: a bind of a parent brings its children
    return [p for p in out if not any(p != q and p.startswith(q + "/") for q in out)]
