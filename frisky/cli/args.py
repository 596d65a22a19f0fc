"""Argument parsing for every ``frisky`` command: one line and exit status 2 for any error.

The type functions here check a value as it is parsed, so a bad port, address or
memory limit is refused before anything starts, in the same words everywhere.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from frisky import config

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line on stderr, status 2."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")


def fail(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` as one line on stderr and exit with status 2."""
    text = " ".join(str(message).split())  # one line, whatever the message held
    sys.stderr.write(f"{prog}: error: {text}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE)


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-65535")
    return value


def address(text: str) -> str:
    """A ZeroMQ address Frisky can use: tcp://host:port, ipc://path or inproc://name."""
    from frisky.zmq import sockets

    try:
        sockets.check_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def positive_int(text: str, least: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def nonnegative_int(text: str) -> int:
    return positive_int(text, least=0)


def memory_limit(text: str) -> int | None:
    """Bytes, "4GiB", a fraction of RAM ("0.5") or "auto" (None)."""
    try:
        return config.parse_memory_limit(text, config.total_memory())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("memory_limit: ")) from None
