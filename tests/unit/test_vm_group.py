"""The VM runner (tests/harness/vm.py ``stream``, used by tests/lab/vm.py and the kernel
tests) runs the VM in its own process group: when this process is ended by a signal (the
Makefile's outer ``timeout`` firing sends SIGTERM), the whole group goes with it. Here a
``sleep`` in a shell stands in for vng and its qemu."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _runner(pidfile: Path, inner_timeout: float = 600) -> list[str]:
    """A Python process that streams a 'VM': a shell whose background sleep writes its pid."""
    code = (
        "import os, sys\n"
        "from tests.harness.vm import stream\n"
        f"cmd = ['sh', '-c', 'sleep 300 & echo $! > {pidfile}; wait']\n"
        f"sys.exit(stream(cmd, None, {inner_timeout}, dict(os.environ)))\n"
    )
    return [sys.executable, "-c", code]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_pid(pidfile: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        if text:
            return int(text)
        time.sleep(0.05)
    raise TimeoutError(f"no pid in {pidfile}")


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_to_the_runner_kills_the_vm_group(tmp_path: Path, signum: int) -> None:
    pidfile = tmp_path / "vm.pid"
    proc = subprocess.Popen(_runner(pidfile), cwd=REPO, stdout=subprocess.DEVNULL)
    vm = _wait_pid(pidfile)
    try:
        os.kill(proc.pid, signum)
        assert proc.wait(timeout=30) == 128 + signum
        assert _gone(vm), "the VM's process group outlived its runner"
    finally:
        if _alive(vm):
            os.kill(vm, signal.SIGKILL)
        proc.kill()


def test_the_makefiles_outer_timeout_leaves_no_vm_behind(tmp_path: Path) -> None:
    """`timeout 2 python -m tests.lab test` as `make test-lab` runs it (timeout signals its
    own process group; the VM is in another one)."""
    pidfile = tmp_path / "vm.pid"
    proc = subprocess.Popen(
        ["timeout", "3", *_runner(pidfile)], cwd=REPO, stdout=subprocess.DEVNULL
    )
    vm = _wait_pid(pidfile)
    try:
        assert proc.wait(timeout=60) == 124
        assert _gone(vm), "the VM's process group outlived `timeout`"
    finally:
        if _alive(vm):
            os.kill(vm, signal.SIGKILL)


def test_the_inner_timeout_kills_the_group_and_says_124(tmp_path: Path) -> None:
    pidfile = tmp_path / "vm.pid"
    proc = subprocess.Popen(_runner(pidfile, inner_timeout=2), cwd=REPO, stdout=subprocess.DEVNULL)
    vm = _wait_pid(pidfile)
    try:
        assert proc.wait(timeout=60) == 124
        assert _gone(vm)
    finally:
        if _alive(vm):
            os.kill(vm, signal.SIGKILL)
