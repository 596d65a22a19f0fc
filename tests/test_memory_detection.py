"""Memory detection under cgroup limits, on a fake cgroup tree."""

from __future__ import annotations

import os

from frisky import config

GiB = 2**30


def physical() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def tree(tmp_path, files: dict[str, str], proc: str):
    """A fake /sys/fs/cgroup with ``files`` (path -> content) and a /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    for path, text in files.items():
        f = root / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    (tmp_path / "proc").write_text(proc)
    return str(root), str(tmp_path / "proc")


def test_cgroup_v2_limit_of_this_group_or_an_ancestor_wins(tmp_path):
    root, proc = tree(tmp_path, {
        "memory.max": "max\n",
        "user.slice/memory.max": f"{2 * GiB}\n",
        "user.slice/job/memory.max": "max\n",
    }, "0::/user.slice/job\n")
    assert config.total_memory(root, proc) == min(physical(), 2 * GiB)


def test_cgroup_v2_in_a_container_reads_the_root(tmp_path):
    root, proc = tree(tmp_path, {"memory.max": f"{GiB}\n"}, "0::/\n")
    assert config.total_memory(root, proc) == min(physical(), GiB)


def test_cgroup_v1_memory_controller(tmp_path):
    root, proc = tree(tmp_path, {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",  # unlimited
        "memory/docker/abc/memory.limit_in_bytes": f"{3 * GiB}\n",
    }, "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    assert config.total_memory(root, proc) == min(physical(), 3 * GiB)


def test_no_limit_garbage_or_no_cgroups_mean_physical_memory(tmp_path):
    root, proc = tree(tmp_path, {"memory.max": "max\n", "memory/memory.limit_in_bytes": "lots\n"},
                      "4:memory:/x\n0::/y\n")
    assert config.total_memory(root, proc) == physical()
    assert config.total_memory(str(tmp_path / "absent"), str(tmp_path / "absent")) == physical()


def test_a_limit_above_physical_memory_is_capped(tmp_path):
    root, proc = tree(tmp_path, {"memory.max": f"{physical() * 4}\n"}, "0::/\n")
    assert config.total_memory(root, proc) == physical()
