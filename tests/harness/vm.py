"""Run the kernel tests (``pytest -m kernel``) where dummy links and IPVS exist.

If the running kernel can load ``ip_vs`` and ``dummy``, the tests run directly. Otherwise
(this machine's kernel has neither) ONE virtme-ng VM boots a Debian kernel from /boot under
TCG (nested KVM is broken here), with the host's filesystem as its root, and runs pytest in it.
The guest's output is streamed through a pipe (a plain file redirect loses most of it) to the
terminal and to ``--log``; pytest's exit status is passed back.

    python tests/harness/vm.py [--log FILE] [--timeout S] [--kernel IMAGE] [-- PYTEST ARGS]

``vng`` must be on PATH (``make test-kernel`` puts ``.venv-vng/bin`` there).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_wlc", "ip_vs_sh", "dummy")
PYTEST_ENV = {
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    "PYTHONDONTWRITEBYTECODE": "1",  # the guest sees the host's tree
    "PYTHONUNBUFFERED": "1",
    "BGPLB_KEEP_LOGS": str(REPO / "_work" / "kernel-logs"),  # agent logs (tests/kernel)
}
DEFAULT_TIMEOUT = 840.0  # the whole VM run, boot included (~2-4 min on an idle machine)


def running_kernel_has_dataplane() -> bool:
    """True if ip_vs and dummy are (or can be) loaded in the running kernel."""
    if shutil.which("modprobe") is not None:
        subprocess.run(["modprobe", "-a", *MODULES], capture_output=True, check=False, timeout=60)
    return Path("/proc/net/ip_vs").exists() and Path("/sys/module/dummy").exists()


def _version_key(version: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", version)]


def find_vm_kernel() -> Path:
    """The newest /boot/vmlinuz-* whose modules include IPVS and dummy."""
    found = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        mods = Path("/lib/modules") / version / "kernel"
        if list(mods.glob("net/netfilter/ipvs/ip_vs.ko*")) and list(
            mods.glob("drivers/net/dummy.ko*")
        ):
            found.append((version, image))
    if not found:
        raise SystemExit(
            "no kernel with IPVS and dummy modules in /boot: apt-get install linux-image-amd64"
        )
    return max(found, key=lambda vi: _version_key(vi[0]))[1]


def pytest_command(args: Sequence[str]) -> list[str]:
    return [
        str(REPO / ".venv" / "bin" / "pytest"),
        # With PYTEST_ENV, only pytest-asyncio is loaded: scanning and importing every
        # installed plugin costs over a minute of start-up under TCG.
        *("-p", "pytest_asyncio.plugin", "-p", "no:cacheprovider"),
        "-m",
        "kernel",
        "tests/kernel",
        *args,
    ]


def guest_script(args: Sequence[str]) -> str:
    """What the guest runs: load the modules, then pytest with stderr merged into stdout."""
    env = " ".join(f"{k}={v}" for k, v in PYTEST_ENV.items())
    pytest = shlex.join(pytest_command(args))
    return (
        f"cd {shlex.quote(str(REPO))} && modprobe -a {' '.join(MODULES)} && "
        f"echo guest kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime)s && "
        f"env {env} {pytest} 2>&1"
    )


GUARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class GroupGuard:
    """The VM (``proc``, started in its own process group with ``start_new_session``) never
    outlives this process: a signal sent to our group does not reach it, so while inside,
    SIGTERM/SIGHUP/SIGINT (e.g. the Makefile's ``timeout`` firing) kill its whole group and
    end this process with 128+signal, and leaving by any exception kills it too. Enter it
    BEFORE starting the VM (then set ``proc``): a signal in between finds the handlers."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._previous: dict[int, Any] = {}

    def kill_group(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.kill_group()
        # os.write: a print could land inside the main thread's own stdout write (reentrant)
        os.write(2, f"\n*** signal {signum}: the VM's process group was killed\n".encode())
        raise SystemExit(128 + signum)

    def __enter__(self) -> GroupGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in GUARDED_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.kill_group()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=30)
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)


def stream(cmd: Sequence[str], log: Path | None, timeout: float, env: dict[str, str]) -> int:
    """Run ``cmd`` in its own process group, killed whole at ``timeout``, on a signal to this
    process or when this function is left early; copy its output to stdout and ``log``."""
    with GroupGuard() as guard:
        guard.proc = proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        return _copy_output(proc, log, timeout)


def _copy_output(proc: subprocess.Popen[bytes], log: Path | None, timeout: float) -> int:
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    assert proc.stdout is not None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "w", encoding="utf-8")) if log is not None else None
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                sys.stdout.write(line)
                sys.stdout.flush()
                if out is not None:
                    out.write(line)
            status = proc.wait()
        finally:
            watchdog.cancel()
            proc.stdout.close()
    if expired.is_set():
        print(f"\n*** kernel tests did not finish within {timeout:g}s: killed", flush=True)
        return 124
    return status


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    p.add_argument("--kernel", type=Path, default=None, help="boot this image (forces a VM)")
    p.add_argument("--memory", default="1G")
    p.add_argument("pytest_args", nargs="*")
    args = p.parse_args(argv)
    env = dict(os.environ) | PYTEST_ENV
    if args.log is not None:
        args.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.kernel is None and running_kernel_has_dataplane():
        print("==> the running kernel has IPVS and dummy: kernel tests run directly", flush=True)
        cmd = pytest_command(args.pytest_args)
    else:
        kernel = args.kernel or find_vm_kernel()
        if shutil.which("vng", path=env.get("PATH")) is None:
            raise SystemExit("vng not on PATH: make test-kernel installs it into .venv-vng")
        print(f"==> booting {kernel} in a virtme-ng VM (TCG) for the kernel tests", flush=True)
        cmd = [
            "vng", "--run", str(kernel), "--disable-kvm", "--memory", args.memory,
            "--cpus", "2", f"--rwdir={REPO / '_work'}",  # e.g. pytest --basetemp=_work/...
            "--exec", guest_script(args.pytest_args),
        ]  # fmt: skip
    status = stream(cmd, args.log, args.timeout, env)
    print(f"==> kernel tests: exit {status} after {time.monotonic() - started:.1f}s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
