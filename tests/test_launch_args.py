"""frisky-launch's command line: bad arguments are one line and status 2, before any ssh."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frisky.cli.main", "launch", *args], capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.parametrize("args, why", [
    ([], "--hosts"),
    (["--hosts", ","], "no hosts"),
    (["--hosts", "a@b@c"], "not a host"),
    (["--hosts", "h1:70000"], "port out of range"),
    (["--hostfile", "/nonexistent/hosts"], "cannot read"),
    (["--hosts", "h1", "--env", "NOEQUALS"], "K=V"),
    (["--hosts", "h1", "--nthreads", "0"], "--nthreads"),
    (["--hosts", "h1", "--memory-limit", "lots"], "size"),
    (["--hosts", "h1", "--port", "80000"], "--port"),
])
def test_bad_arguments_are_one_line_and_status_2(args, why):
    done = _launch(*args)
    assert done.returncode == 2, done
    assert why in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_hostfile_with_a_bad_line_names_it(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("h1\nh2 workers=many\n")
    done = _launch("--hostfile", str(f))
    assert done.returncode == 2 and f"{f}:2" in done.stderr, done.stderr
