"""Raw disk baseline vs Frisky's spill file, measured side by side in one run.

    python scripts/disk_baseline.py [--dir DIR] [--size 1GiB] [--rounds 3] [--no-dd] [--json]

Each round measures, on the same directory: an O_DIRECT write of N x 4 MiB (what
``dd bs=4M oflag=direct`` does) and ``dd`` itself if installed, the O_DIRECT read back
(``dd iflag=direct``) and into fresh memory, then a SpillFile spilling incompressible 64 MiB
buffers (numpy's, and page-aligned ones as shared memory gives) and compressible ``arange``
float64 buffers, and reading them back. The disk of a shared
machine drifts by 2x within minutes, so rounds interleave raw and spill runs and the
ratios are taken within each round; the table shows the median round (and the best).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BLOCK = 4 << 20
VALUE = 64 << 20


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"512M"``, ``"2g"`` or plain bytes -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    scale = 1 << (10 * " kmgt".index(m.group(2) or " "))
    return int(float(m.group(1)) * scale)


def raw_write(path: str, nbytes: int) -> float:
    """GB/s of an O_DIRECT write of ``nbytes`` in 4 MiB blocks to a new file (like dd)."""
    buf = mmap.mmap(-1, BLOCK)
    buf.write(os.urandom(BLOCK))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    try:
        with memoryview(buf) as mv:
            t0 = time.perf_counter()
            for off in range(0, nbytes, BLOCK):
                os.pwrite(fd, mv, off)
            dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    return nbytes / dt / 1e9


def raw_read(path: str) -> float:
    """GB/s of an O_DIRECT read of ``path`` in 4 MiB blocks into one buffer (like dd)."""
    buf = mmap.mmap(-1, BLOCK)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    total = 0
    try:
        with memoryview(buf) as mv:
            t0 = time.perf_counter()
            while True:
                n = os.preadv(fd, [mv], total)
                total += n
                if n < BLOCK:
                    break
            dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    return total / dt / 1e9


def raw_read_fresh(path: str) -> float:
    """GB/s of O_DIRECT reads of 64 MiB values into fresh memory, as any unspill must do.

    dd reuses one buffer; a value read back needs new memory, whose first-touch page faults
    cost about as much as the disk on a VM. This separates that cost from Frisky's own.
    """
    import numpy as np

    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    total = 0
    try:
        size = os.fstat(fd).st_size
        t0 = time.perf_counter()
        for off in range(0, size - size % VALUE, VALUE):
            raw = np.empty(VALUE + 4096, np.uint8)
            skip = -raw.ctypes.data % 4096
            with memoryview(raw[skip:skip + VALUE]) as mv:
                for piece in range(0, VALUE, 8 << 20):
                    total += os.preadv(fd, [mv[piece:piece + (8 << 20)]], off + piece)
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    return total / dt / 1e9


def run_dd(args: list[str]) -> float | None:
    """Run dd and return its GB/s from the bytes and seconds it reports (None if it failed)."""
    try:
        out = subprocess.run(["dd", *args], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^(\d+) bytes.*copied, ([\d.,]+) s", out.stderr, re.M)
    if out.returncode or not m:
        return None
    return int(m.group(1)) / float(m.group(2).replace(",", ".")) / 1e9


def spill_round(directory: str, nbytes: int, data, label: str) -> tuple[float, float, dict]:
    """Spill ``nbytes`` as copies of ``data`` (64 MiB), flush, read all back: (write, read) GB/s."""
    from frisky.spill import SpillFile

    n = max(1, nbytes // data.nbytes)
    with SpillFile(directory, name="baseline") as sf:
        c0, t0 = _cpu(), time.perf_counter()
        for i in range(n):
            sf.put(f"{label}-{i}", [data])
        sf.flush()
        wdt, wcpu = time.perf_counter() - t0, _cpu() - c0
        c0, t0 = _cpu(), time.perf_counter()
        for i in range(n):
            sf.get(f"{label}-{i}")
        rdt, rcpu = time.perf_counter() - t0, _cpu() - c0
        stats = sf.stats
    gb = n * data.nbytes / 1e9
    stats.update(cpu_per_gb_write=wcpu / gb, cpu_per_gb_read=rcpu / gb)
    return gb / wdt, gb / rdt, stats


def _cpu() -> float:
    """CPU seconds used by this process so far (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure(directory: str, nbytes: int, rounds: int, use_dd: bool) -> dict:
    import numpy as np

    nbytes = max(BLOCK, nbytes - nbytes % BLOCK)
    incompressible = np.random.default_rng(0).random(VALUE // 8)
    compressible = np.arange(VALUE // 8, dtype=np.float64)
    # Page-aligned like a shared-memory segment: written without the staging copy.
    segment = mmap.mmap(-1, VALUE)
    aligned = np.frombuffer(segment, dtype=np.float64)
    aligned[:] = incompressible
    have_dd = use_dd and shutil.which("dd") is not None
    load_before = os.getloadavg()[0]  # others' load: the run itself adds ~1.5 on 2 cores
    work = tempfile.mkdtemp(prefix="frisky-baseline-", dir=directory)
    rows: list[dict] = []
    try:
        path = os.path.join(work, "raw")
        for _ in range(rounds):
            r: dict = {"raw_write": raw_write(path, nbytes), "raw_read": raw_read(path),
                       "raw_read_fresh": raw_read_fresh(path)}
            os.unlink(path)
            if have_dd:
                r["dd_write"] = run_dd(["if=/dev/zero", f"of={path}", "bs=4M", f"count={nbytes // BLOCK}",
                                        "oflag=direct"])
                r["dd_read"] = run_dd([f"if={path}", "of=/dev/null", "bs=4M", "iflag=direct"])
                os.unlink(path)
            r["spill_write"], r["spill_read"], st = spill_round(work, nbytes, incompressible, "rand")
            r["direct"] = st["direct"]
            r["cpu_per_gb_write"], r["cpu_per_gb_read"] = st["cpu_per_gb_write"], st["cpu_per_gb_read"]
            r["spill_write_aligned"], _, st = spill_round(work, nbytes, aligned, "shm")
            r["cpu_per_gb_write_aligned"] = st["cpu_per_gb_write"]
            r["spill_write_compressible"], r["spill_read_compressible"], st = spill_round(
                work, nbytes, compressible, "arange")
            r["cpu_per_gb_write_compressible"] = st["cpu_per_gb_write"]
            r["cpu_per_gb_read_compressible"] = st["cpu_per_gb_read"]
            r["compression_ratio"] = st["bytes_written"] / max(1, st["bytes_logical"])
            wbase = r.get("dd_write") or r["raw_write"]
            rbase = r.get("dd_read") or r["raw_read"]
            r["ratio_write"] = r["spill_write"] / wbase
            r["ratio_write_compressible"] = r["spill_write_compressible"] / wbase
            r["ratio_write_aligned"] = r["spill_write_aligned"] / wbase
            r["ratio_read"] = r["spill_read"] / rbase
            r["ratio_read_compressible"] = r["spill_read_compressible"] / rbase
            r["ratio_read_vs_fresh"] = r["spill_read"] / r["raw_read_fresh"]
            rows.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    keys = [k for k in rows[0] if k != "direct" and all(row.get(k) is not None for row in rows)]
    return {
        "directory": directory,
        "bytes": nbytes,
        "rounds": rounds,
        "direct": rows[0]["direct"],
        "baseline": "dd" if have_dd and rows[0].get("dd_write") else "python O_DIRECT",
        "median": {k: statistics.median(row[k] for row in rows) for k in keys},
        "best": {k: (min if k.startswith("cpu") else max)(row[k] for row in rows) for k in keys},
        "loadavg_before": load_before,
        "per_round": rows,
    }


def table(res: dict) -> str:
    med, best = res["median"], res["best"]
    lines = [
        f"directory {res['directory']}  {res['bytes'] / 2**30:.2f} GiB per run  {res['rounds']} rounds  "
        f"spill I/O: {'O_DIRECT' if res['direct'] else 'buffered'}  ratios vs {res['baseline']} in the same round",
        f"{'what':38s} {'GB/s med':>9s} {'GB/s best':>9s} {'ratio med':>9s} {'ratio best':>10s}",
    ]
    rows = [
        ("python O_DIRECT write 4 MiB", "raw_write", None),
        ("dd bs=4M oflag=direct", "dd_write", None),
        ("python O_DIRECT read 4 MiB", "raw_read", None),
        ("dd bs=4M iflag=direct", "dd_read", None),
        ("python O_DIRECT read into fresh memory", "raw_read_fresh", None),
        ("spill write, random 64 MiB", "spill_write", "ratio_write"),
        ("spill write, random, page-aligned src", "spill_write_aligned", "ratio_write_aligned"),
        ("spill write, arange 64 MiB", "spill_write_compressible", "ratio_write_compressible"),
        ("spill read, random", "spill_read", "ratio_read"),
        ("spill read, arange", "spill_read_compressible", "ratio_read_compressible"),
    ]
    for label, key, ratio in rows:
        if key not in med:
            continue
        extra = f" {med[ratio]:9.2f} {best[ratio]:10.2f}" if ratio else ""
        lines.append(f"{label:38s} {med[key]:9.2f} {best[key]:9.2f}{extra}")
    lines.append(f"{'spill read, random vs read into fresh memory':38s} {'':9s} {'':9s} "
                 f"{med['ratio_read_vs_fresh']:9.2f} {best['ratio_read_vs_fresh']:10.2f}")
    lines.append(f"arange stored/original: {med['compression_ratio']:.4f}")
    lines.append("CPU s/GB (median): random write {:.2f} read {:.2f}; aligned write {:.2f}; "
                 "arange write {:.2f} read {:.2f}".format(
                     med["cpu_per_gb_write"], med["cpu_per_gb_read"], med["cpu_per_gb_write_aligned"],
                     med["cpu_per_gb_write_compressible"], med["cpu_per_gb_read_compressible"]))
    lines.append(f"1-min load average before the run: {res['loadavg_before']:.2f} "
                 "(from other processes: much above 0.5 and the figures get noisy)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="directory to measure (default: the spill directory)")
    ap.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="bytes per run (default 1GiB)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--no-dd", action="store_true", help="do not run dd itself")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    try:
        import frisky.spill  # noqa: F401
    except ImportError:  # run from a checkout that is not installed
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from frisky.spill.sweep import spill_root

    directory = spill_root(args.dir)
    res = measure(directory, args.size, max(1, args.rounds), not args.no_dd)
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
