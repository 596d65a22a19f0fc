"""The fork server's process handles."""

from __future__ import annotations

import threading

from frisky.deploy import zygote


def test_two_threads_wait_for_one_killed_process(tmp_path):
    # a cluster's watcher and its caller may both wait on a worker that was killed
    proc = zygote.get().spawn(["scheduler", "--address", f"ipc://{tmp_path}/s", "--quiet"])
    assert proc.poll() is None
    outcomes: list = []

    def wait():
        try:
            outcomes.append(proc.wait(10))
        except BaseException as e:  # noqa: BLE001 - the test reports it
            outcomes.append(e)

    threads = [threading.Thread(target=wait) for _ in range(4)]
    for t in threads:
        t.start()
    proc.kill()
    for t in threads:
        t.join(15)
    assert outcomes == [0, 0, 0, 0]
    assert proc.poll() == 0 and proc.fileno() is None
