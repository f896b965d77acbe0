"""bench/lab.py make_realtime: every thread of a process (FRR's daemons are multi-threaded)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from bench.lab import REALTIME_PRIORITY, make_realtime, realtime_self, tasks


def test_tasks_lists_every_thread_of_a_process() -> None:
    started = threading.Event()
    stop = threading.Event()

    def worker() -> None:
        started.set()
        stop.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    try:
        started.wait(10)
        assert t.native_id in tasks(os.getpid())
        assert threading.main_thread().native_id in tasks(os.getpid())
    finally:
        stop.set()
        t.join()
    assert tasks(2**22 + 12345) == []  # no such process


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs root")
def test_make_realtime_sets_fifo_on_every_thread_of_the_process() -> None:
    code = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,)).start()\n"
        "print(1, flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        child.stdout.readline()
        threads = tasks(child.pid)
        assert len(threads) == 2
        assert sorted(make_realtime([child.pid])) == threads
        for tid in threads:
            assert os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO
            assert os.sched_getparam(tid).sched_priority == REALTIME_PRIORITY
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs root")
def test_realtime_self_children_inherit_it_and_it_is_undone() -> None:
    """The trigger the bench forks (nft) runs at the measuring thread's priority."""
    before = os.sched_getscheduler(0)
    with realtime_self():
        out = subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert int(out) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO
    assert os.sched_getscheduler(0) == before
