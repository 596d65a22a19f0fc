"""Exceptions raised by the spill file."""

from __future__ import annotations


class SpillError(OSError):
    """Spilling or unspilling failed: disk full, unwritable directory, closed file, bad data."""


class ChecksumError(SpillError):
    """A spilled value read back does not match the checksum recorded when it was written."""
