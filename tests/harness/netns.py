"""Network namespaces and veths for tests, named per test run so parallel runs never clash.

Every namespace this module makes is called ``blt<pid>-<name>``; ``cleanup_stale()`` (also
``python -m tests.harness.netns``) removes those of runs whose pid is gone, and the processes
still inside them. Everything is done with ``ip`` and killed by pid, never by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "blt"
_NAME = re.compile(rf"^{PREFIX}(\d+)-")


def tempdir(kind: str) -> Path:
    """A fresh directory under /tmp named after this run (``blt<pid>-<kind>-*``): short
    enough for unix socket paths, and ``cleanup_stale`` finds it if the run dies."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{kind}-", dir="/tmp"))


def run(*argv: str, check: bool = True, timeout: float = 10.0) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def ns_pids(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in out.split()]


def kill_pids(pids: list[int], grace: float = 2.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


alive = _alive


@dataclass
class Lab:
    """The namespaces and links of one test. ``close()`` removes everything it made."""

    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}-")
    namespaces: list[str] = field(default_factory=list)

    def ns(self, name: str) -> str:
        return f"{self.tag}{name}"

    def add_ns(self, name: str) -> str:
        ns = self.ns(name)
        run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            run("ip", "netns", "exec", ns, "sysctl", "-qw", key)
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
        return ns

    def link(
        self, a: str, a_if: str, b: str, b_if: str, addrs_a: list[str], addrs_b: list[str]
    ) -> None:
        """A veth between namespaces ``a`` and ``b`` (full names), with addresses (nodad)."""
        run("ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b)
        for ns, ifname, addrs in ((a, a_if, addrs_a), (b, b_if, addrs_b)):
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                run("ip", "-n", ns, "addr", "add", addr, "dev", ifname, *extra)
            run("ip", "-n", ns, "link", "set", ifname, "up")

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            kill_pids(ns_pids(ns))
            run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


def cleanup_stale() -> list[str]:
    """Remove test namespaces (and their processes) and temp dirs left by dead runs."""
    removed = []
    for line in run("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME.match(name)
        if not m or _alive(int(m.group(1))):
            continue
        kill_pids(ns_pids(name))
        run("ip", "netns", "del", name, check=False)
        removed.append(name)
    for path in Path("/tmp").glob(f"{PREFIX}*-*"):
        m = _NAME.match(path.name)
        if m and path.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


if __name__ == "__main__":
    for name in cleanup_stale():
        print(f"removed stale {name}")
