"""The wheel: every file of the package ships (the dashboard's pages and vendored chart
library included), and the whole wheel stays under 1 MB."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 1 << 20


def _package_files() -> set[str]:
    """Every file under frisky/ that belongs in a wheel (no caches, no compiled files)."""
    out = set()
    for top, dirs, files in os.walk(os.path.join(ROOT, "frisky")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if not f.endswith((".pyc", ".pyo")):
                out.add(os.path.relpath(os.path.join(top, f), ROOT).replace(os.sep, "/"))
    return out


@pytest.mark.timeout(120)
def test_wheel_ships_every_package_file_and_stays_small(tmp_path):
    # build from a clean copy, so the checkout gets no build/ or egg-info litter
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(os.path.join(ROOT, "frisky"), src / "frisky",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "wheel"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("frisky-*.whl")
    size = wheel.stat().st_size
    assert size < LIMIT, f"the wheel is {size} bytes, over the 1 MB budget"
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_package_files() - names)
    assert not missing, f"package files missing from the wheel: {missing}"
    for f in ("index.html", "uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"):
        assert f"frisky/dashboard/static/{f}" in names
