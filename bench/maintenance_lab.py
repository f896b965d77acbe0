"""The lab pieces of benchmark 4 (bench/maintenance.py): r1's ECMP next hops watched by a
thread, the client namespace, the node backend and the load client as subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.harness.agent_proc import BACKEND_PORT, AgentProc
from tests.harness.frr import BgpLab
from tests.harness.netns import run

from .lab import PY, REPO, FibProbe

NODE_BACKEND = REPO / "containerlab" / "node" / "backend.py"
CLIENT_V4, CLIENT_GW = "10.0.100.2", "10.0.100.1"

Hops = tuple[str, ...]


# --------------------------------------------------------------------------- r1's FIB


class HopsProbe(FibProbe):
    """FibProbe plus every next hop of the VIP (``route get`` gives one, hashed)."""

    def hops(self, address: str) -> Hops:
        out: list[str] = []
        for r in self._ipr.route("dump", family=2):
            if r.get("RTA_DST") != address or r["dst_len"] != 32:
                continue
            if r.get("RTA_GATEWAY"):
                out.append(r.get("RTA_GATEWAY"))
            for nh in r.get("RTA_MULTIPATH") or []:
                gw = nh.get("RTA_GATEWAY")
                if gw:
                    out.append(gw)
        return tuple(sorted(out))


class FibWatch:
    """A thread polling the VIP's next hops in r1; ``timeline`` = [(time, hops)] changes, the
    time being when the poll that saw the change began. ``windows`` holds, per change, how long
    before that the previous poll began (the change happened in between): the resolution."""

    def __init__(self, ns: str, address: str, step: float = 0.002) -> None:
        self.probe = HopsProbe(ns)
        self.address, self.step = address, step
        self.timeline: list[tuple[float, Hops]] = [(time.time(), self.probe.hops(address))]
        self.windows: list[float] = []
        self.gaps: list[float] = []  # every poll-to-poll interval over 20 ms
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.time()
        while not self._stop.wait(self.step):
            now = time.time()
            hops = self.probe.hops(self.address)
            with self._lock:
                if now - last > 0.02:
                    self.gaps.append(now - last)
                if hops != self.timeline[-1][1]:
                    self.timeline.append((now, hops))
                    self.windows.append(now - last)
            last = now

    def wait(self, pred: Callable[[Hops], bool], within: float, after: float) -> float:
        """The time of the first change at/after ``after`` whose hops satisfy ``pred`` (or
        ``after`` itself when the hops in force then already do)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self._lock:
                line = list(self.timeline)
            before = [x for x in line if x[0] <= after]
            if before and pred(before[-1][1]):
                return after
            for t, hops in line:
                if t > after and pred(hops):
                    return t
            time.sleep(0.01)
        raise TimeoutError(f"r1 FIB for {self.address}: condition not met within {within}s")

    def since(self, t: float) -> tuple[list[tuple[float, Hops]], list[float]]:
        """The hops in force at ``t``, then every change after it; and those changes' windows."""
        with self._lock:
            first = next((i for i, x in enumerate(self.timeline) if x[0] > t), len(self.timeline))
            k = max(0, first - 1)
            return list(self.timeline[k:]), list(self.windows[k:])

    def take_gaps(self) -> list[float]:
        with self._lock:
            gaps, self.gaps = self.gaps, []
        return gaps

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.probe.close()


# --------------------------------------------------------------------------- lab pieces


def add_client(bl: BgpLab) -> str:
    """c1 behind r1 (10.0.100.0/24); the LB nodes route their answers back via r1."""
    c1 = bl.lab.add_ns("c1")
    bl.lab.link(bl.router.ns, "r1-c1", c1, "eth0", [f"{CLIENT_GW}/24"], [f"{CLIENT_V4}/24"])
    run("ip", "-n", c1, "route", "add", "default", "via", CLIENT_GW)
    for n, ns in enumerate(bl.lb_ns, 1):
        run("ip", "-n", ns, "route", "add", "10.0.100.0/24", "via", bl.r1_v4(n))
    return c1


def r1_hash_policy(bl: BgpLab) -> int:
    out = run(
        "ip", "netns", "exec", bl.router.ns, "sysctl", "-n", "net.ipv4.fib_multipath_hash_policy"
    )
    return int(out.strip())


@dataclass
class NodeBackend:
    """containerlab/node/backend.py on 0.0.0.0:PORT in lbN: answers every GET with ``name``."""

    ns: str
    name: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["ip", "netns", "exec", self.ns, str(PY), str(NODE_BACKEND), "--name", self.name]
        self.proc = subprocess.Popen(
            [*argv, "--port", str(BACKEND_PORT), "0.0.0.0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith(f"backend {self.name} listening"):
            raise RuntimeError(f"backend {self.name} did not start: {line!r}")

    def stop(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)

    def reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@dataclass
class Node:
    n: int
    address: str
    agent: AgentProc
    backend: NodeBackend

    def start(self) -> None:
        self.backend.start()
        self.agent.start()


class Client:
    """``python -m tests.lab.client load`` in c1; one JSON line per request, kept here."""

    def __init__(self, ns: str, vip: str, rate: float, workers: int) -> None:
        argv = ["ip", "netns", "exec", ns, str(PY), "-m", "tests.lab.client", "load", vip]
        argv += ["--port", str(BACKEND_PORT), "--rate", str(rate), "--workers", str(workers)]
        argv += ["--duration", "86400"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=REPO, text=True)
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def count(self) -> int:
        return len(self.lines)

    def stop(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self._reader.join(10)
        summary = next((x for x in self.lines if x.get("summary")), {})
        return [x for x in self.lines if not x.get("summary")], summary
