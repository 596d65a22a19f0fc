"""Peers fetching values their owner has spilled: served from the spill file, not unspilled."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

import frisky

MiB = 2**20
# 384 MiB of incompressible results on a worker limited to 256 MiB (a worker's own RSS, with
# numpy and the codecs loaded, is ~70 MiB: a smaller limit leaves spilling no room before the
# supervisor's restart threshold at 95%)
N, MIB, LIMIT = 24, 16, 256 * 2**20


def rand(i, mib):
    return np.random.default_rng(i).random(mib * MiB // 8)


def total(a):
    return float(a.sum())


def counters():
    from frisky.telemetry import recorder

    return dict(recorder.counters)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_peer_fetch_of_spilled_values_is_mapped_from_disk(transport):
    with frisky.LocalCluster(n_workers=2, memory_limit=LIMIT, transport=transport) as c, \
            c.get_client() as cl:
        a, b = sorted(cl.scheduler_info()["workers"])
        parts = cl.map(rand, range(N), [MIB] * N, workers=[a])
        frisky.wait(parts, timeout=60)
        before = cl.submit(counters, workers=[a], pure=False).result(timeout=30)
        assert before.get("spill.bytes_spilled", 0) >= 4 * MIB * MiB  # most of them are on disk
        # one at a time, so the consumer never needs room for more than one
        for i, p in enumerate(parts):
            got = cl.submit(total, p, workers=[b], pure=False).result(timeout=30)
            assert got == total(rand(i, MIB))
        after = cl.submit(counters, workers=[a], pure=False).result(timeout=30)
        # served from mappings of the spill file: none of them was read back into memory
        assert after.get("spill.bytes_mapped", 0) >= 4 * MIB * MiB
        assert after.get("spill.bytes_unspilled", 0) == before.get("spill.bytes_unspilled", 0)


@pytest.mark.timeout(120)
def test_corrupt_spilled_value_is_not_served_and_gets_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("FRISKY_SPILL_DIRECTORY", str(tmp_path))
    with frisky.LocalCluster(n_workers=2, memory_limit=LIMIT) as c, c.get_client() as cl:
        a, b = sorted(cl.scheduler_info()["workers"])
        parts = cl.map(rand, range(N), [MIB] * N, workers=[a])
        frisky.wait(parts, timeout=60)
        files = glob.glob(os.path.join(str(tmp_path), "frisky-spill-*", "data"))
        assert files, "the worker spilled"
        for path in files:  # flip every byte the spill files hold
            fd = os.open(path, os.O_RDWR)
            try:
                size = os.fstat(fd).st_size
                for off in range(0, size, 4 * MiB):
                    block = np.frombuffer(os.pread(fd, 4 * MiB, off), np.uint8) ^ 0xFF
                    os.pwrite(fd, block.tobytes(), off)
                os.fsync(fd)
            finally:
                os.close(fd)
        # the owner refuses to send what fails its checksum; the scheduler recomputes it
        got = cl.submit(total, parts[0], workers=[b], pure=False).result(timeout=60)
        assert got == total(rand(0, MIB))
        assert cl.submit(counters, workers=[a], pure=False).result(timeout=30).get("spill.checksum_errors", 0) >= 1
