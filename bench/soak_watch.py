"""The soak's observers: HTTP from a thread inside the LB namespace, the 1 s ``/metrics``
scraper, the process sampler, the router's RIB sampler and its FIB event monitor.

HTTP goes through a worker thread that entered the namespace with ``setns(2)`` (a network
namespace is per thread), so a scrape is one in-process request, not a forked curl.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .lab import tree
from .soak_truth import Checker

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def enter_netns(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no answer (connection error, timeout)
    body: bytes
    seconds: float
    error: str = ""


class NsHttp:
    """Plain HTTP/1.1 requests made by one thread inside ``ns``."""

    def __init__(self, ns: str) -> None:
        self.pool = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(ns,))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def request(
        self,
        method: str,
        host: str,
        port: int,
        path: str,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        return self.pool.submit(_request, method, host, port, path, token, timeout).result()


def _request(
    method: str, host: str, port: int, path: str, token: str | None, timeout: float
) -> Reply:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, body, time.monotonic() - t0)
    except (OSError, http.client.HTTPException) as err:
        return Reply(0, b"", time.monotonic() - t0, f"{type(err).__name__}: {err}")
    finally:
        conn.close()


# --------------------------------------------------------------------------- /metrics


@dataclass
class Scrapes:
    total: int = 0
    non_200: int = 0
    no_answer: int = 0
    parsed: int = 0  # bodies given to prometheus_client's parser (every ``parse_every``-th)
    parse_failures: int = 0  # of those, refused; plus any body without the tasks gauge
    ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    tasks: float | None = None  # bgplb_asyncio_tasks of the last good scrape
    tasks_at: float = 0.0


TASKS_LINE = re.compile(rb"^bgplb_asyncio_tasks (\S+)$", re.MULTILINE)


def scrape_once(port: int, out: Scrapes, parse: bool = True) -> None:
    """One ``GET /metrics`` (the caller is inside the namespace): the status, the tasks gauge
    found by a regex (a body without it, or not ending in a newline, is a parse failure)
    and, if ``parse``, the whole body through prometheus_client's parser (~0.3 s of CPU for
    2.6 MB: a full parse every second took 78 % of a core in the f924920 run)."""
    r = _request("GET", "127.0.0.1", port, "/metrics", None, 10.0)
    out.total += 1
    out.ms.append(r.seconds * 1000)
    if r.status != 200:
        if r.status == 0:
            out.no_answer += 1
        else:
            out.non_200 += 1
        if len(out.failures) < 50:
            out.failures.append(f"{time.time():.3f} {r.status} {r.error} {r.body[:200]!r}")
        return
    m = TASKS_LINE.search(r.body)
    if m is None or not r.body.endswith(b"\n"):
        out.parse_failures += 1
        if len(out.failures) < 50:
            out.failures.append(f"{time.time():.3f} no bgplb_asyncio_tasks line or cut short")
        return
    out.tasks, out.tasks_at = float(m.group(1)), time.time()
    if not parse:
        return
    out.parsed += 1
    try:
        for _ in text_string_to_metric_families(r.body.decode()):
            pass
    except Exception as err:  # any parser failure counts
        out.parse_failures += 1
        if len(out.failures) < 50:
            out.failures.append(f"{time.time():.3f} parse: {type(err).__name__}: {err}")


def _scraper(
    ns: str, port: int, every: float, parse_every: int, conn: Connection, stop: EventType
) -> None:
    """The scraper process: a session (autogroup) of its own at nice 0, NOT boosted, inside
    the namespace, so it competes with the host, not with the agent, ExaBGP and FRR (boosted,
    it parsed every 2.6 MB body and took the CPU ExaBGP needed: bench/NOTES.md). A full parse
    every ``parse_every``-th scrape; every scrape checks the status and the tasks gauge."""
    os.setsid()
    os.setpriority(os.PRIO_PROCESS, 0, 0)
    enter_netns(ns)
    out = Scrapes()
    nxt = time.monotonic()
    n = 0
    while not stop.is_set():
        scrape_once(port, out, parse=n % parse_every == 0)
        n += 1
        conn.send(out)
        out.ms, out.failures = [], []  # sent: the parent keeps them
        nxt += every
        stop.wait(max(0.0, nxt - time.monotonic()))
    conn.close()


class Scraper:
    """``/metrics`` every ``every`` s from a process of its own; ``scrapes`` is kept up to
    date by a thread reading what it sends."""

    def __init__(self, ns: str, port: int, every: float = 1.0, parse_every: int = 10) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.scrapes = Scrapes()
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_scraper, args=(ns, port, every, parse_every, send, self._stop), daemon=True
        )
        self.proc.start()
        send.close()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        s = self.scrapes
        while True:
            try:
                got: Scrapes = self._recv.recv()
            except (EOFError, OSError):
                return
            s.total, s.non_200, s.no_answer = got.total, got.non_200, got.no_answer
            s.parse_failures, s.parsed = got.parse_failures, got.parsed
            s.ms += got.ms
            s.failures += got.failures
            if got.tasks_at > s.tasks_at:
                s.tasks, s.tasks_at = got.tasks, got.tasks_at

    def close(self) -> None:
        self._stop.set()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.thread.join(10)


AUTOGROUP_NICE = -15  # what `make soak`'s `nice -n -15` means, for the kernel's autogroups


def boost(pid: int) -> None:
    """Give ``pid``'s autogroup (its session) the nice of ``make soak``. With autogroup
    scheduling on (kernel.sched_autogroup_enabled=1, as here) a task's nice only counts inside
    its session: the agent at nice -15 shared one session's fair share with everything else
    in it, ~12 % of a core at load 16, and never announced 1,000 services."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(f"{AUTOGROUP_NICE}\n")


def renice(pid: int, nice: int) -> None:
    """Every thread of ``pid`` to ``nice`` (setpriority(PRIO_PROCESS) is per thread on Linux)."""
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)


@dataclass
class Booster:
    """Keeps the agent's descendants (ExaBGP and its relay, and a restarted ExaBGP: polled)
    at the soak's priority: their session's autogroup (``boost``) and every thread's nice.
    ExaBGP runs in a session of its own (the agent starts it with start_new_session), so
    ``make soak``'s nice alone left it an unboosted autogroup: the f924920 run's backlog."""

    root: int
    nice: int = field(default_factory=lambda: os.getpriority(os.PRIO_PROCESS, 0))
    seen: set[int] = field(default_factory=set)
    boosted: list[dict[str, Any]] = field(default_factory=list)

    def poll(self) -> None:
        for pid in tree(self.root):
            if pid == self.root or pid in self.seen:
                continue
            self.seen.add(pid)
            boost(pid)
            renice(pid, self.nice)
            self.boosted.append({"t": time.time(), "pid": pid, "comm": comm(pid)})


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def schedstat(pid: int) -> list[int] | None:
    """[ns on a CPU, ns runnable but waiting for one (run delay), timeslices], summed over
    the threads of ``pid`` (/proc/PID/task/TID/schedstat): a starved process shows as a run
    delay growing as fast as the wall clock."""
    total = [0, 0, 0]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                values = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                total = [a + int(b) for a, b in zip(total, values, strict=False)]
    except OSError:
        return None
    return total


# --------------------------------------------------------------------------- processes


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def sample_processes(
    agent_pid: int, scrapes: Scrapes, others: dict[str, int] | None = None
) -> dict[str, Any]:
    """The agent process alone (RSS KiB, FDs, threads), its tree's RSS, the task gauge, and
    the schedstat of the agent, ExaBGP (the agent's child named ``exabgp``; the others are
    the reloads' short config-parse processes), ExaBGP's child (``exabgp-child``: the
    relay) and ``others`` (role -> pid: bgpd, zebra) as {role: [pid, cpu_ns, delay_ns,
    slices]}."""
    own = proc_status(agent_pid)
    pids = tree(agent_pid)
    children = [p for p in pids if p != agent_pid]
    roles = {"agent": agent_pid, **(others or {})}
    sched: dict[str, list[int]] = {}
    exabgp = [p for p in children if _ppid(p) == agent_pid and comm(p) == "exabgp"]
    if exabgp:  # the agent runs one ExaBGP at a time
        roles["exabgp"] = exabgp[0]
        relay = [p for p in children if _ppid(p) == exabgp[0]]
        if relay:
            roles["exabgp-child"] = relay[0]
    for role, p in roles.items():
        st = schedstat(p)
        if st is not None:
            sched[role] = [p, *st]
    return {
        "schedstat": sched,
        "t": time.time(),
        "rss_kib": own.get("VmRSS"),
        "threads": own.get("Threads"),
        "fds": fd_count(agent_pid),
        "tasks": scrapes.tasks if time.time() - scrapes.tasks_at < 15 else None,
        "tree_rss_kib": own.get("VmRSS", 0) + sum(proc_status(p).get("VmRSS", 0) for p in children),
        "children": len(children),
        "load1": os.getloadavg()[0],
    }


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class LoopThread:
    """Where the agent's event-loop thread (its main thread) is, sampled every 100 ms: the
    scheduler state (R running, S sleeping, D blocked in the kernel) and, when not running,
    the kernel function it waits in (``wchan``). A loop blocked in D (e.g. a netlink request
    waiting for the rtnl lock) runs nothing else: no probe, no API, no announcement."""

    states: Counter[str] = field(default_factory=Counter)
    wchan: Counter[str] = field(default_factory=Counter)  # of the D samples

    def sample(self, pid: int) -> None:
        try:
            stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            self.states[state] += 1
            if state == "D":
                self.wchan[Path(f"/proc/{pid}/task/{pid}/wchan").read_text().strip() or "?"] += 1
        except (FileNotFoundError, ProcessLookupError, IndexError):
            self.states["gone"] += 1


# --------------------------------------------------------------------------- router


def rib_vips(vty_dir: Path, prefix: str = "10.99.") -> set[str]:
    """The soak's VIPs with a valid path in r1's BGP RIB (``show bgp ipv4 unicast json``)."""
    out = subprocess.run(
        ["vtysh", "--vty_socket", str(vty_dir), "-c", "show bgp ipv4 unicast json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    routes = json.loads(out or "{}").get("routes", {})
    seen = set()
    for pfx, paths in routes.items():
        if pfx.startswith(prefix) and any(p.get("valid") for p in paths):
            seen.add(pfx.split("/")[0])
    return seen


def fib_vips(ns: str, prefix: str = "10.99.") -> set[str]:
    """The soak's VIPs in r1's kernel FIB (BGP routes; ``ip -j route``: cheap, unlike vtysh)."""
    out = subprocess.run(
        ["ip", "-n", ns, "-4", "-j", "route", "show", "proto", "bgp"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return {r["dst"] for r in json.loads(out or "[]") if str(r.get("dst", "")).startswith(prefix)}


class FibMonitor:
    """``ip -ts monitor route`` in r1: every install / delete of a soak VIP in r1's FIB is
    judged by the checker at the time the kernel reported it."""

    LINE = re.compile(r"\[([0-9T:.-]+)\] (Deleted )?(10\.99\.\d+\.\d+) ")

    RCVBUF = 8 << 20  # the netlink socket's buffer (ip's default 1 MiB); the kernel caps it

    def __init__(self, ns: str, checker: Checker) -> None:
        self.checker = checker
        # ip prints "netlink receive error No buffer space available (105)" on ENOBUFS
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["ip", "-n", ns, "-ts", "-rcvbuf", str(self.RCVBUF), "monitor", "route"],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        from datetime import datetime

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = self.LINE.match(line)
            if m:
                at = datetime.fromisoformat(m.group(1)).timestamp()
                self.checker.event(m.group(3), m.group(2) is None, at)

    def overruns(self) -> int:
        """Times ``ip monitor`` lost messages (its socket overflowed: a burst of route
        changes); the checker's FIB samples correct the routes it missed (``gaps``)."""
        self.stderr.seek(0)
        return sum("receive error" in line or "overrun" in line for line in self.stderr)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()
