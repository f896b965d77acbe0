"""Shared pieces of the benchmarks: the FRR lab, the agent with a chosen log level, a fast FIB
probe, process-tree CPU/RSS sampling and results.json records.

Everything reuses the test harness (tests/harness): ``build_bgp_lab``/``close_bgp_lab`` for r1
(FRR 8.4) + lbN namespaces, ``AgentProc``/``Backend``/``base_config``/``service``/``peer`` for the
agent. Differences, and why:

- ``BenchAgent`` passes ``--log-level`` of our choice (the test harness always uses debug, which
  at 1,000 services writes ~1,000 JSON lines a second and would be counted as agent CPU).
- ``FibProbe`` asks r1's kernel over one netlink socket (``route get``, ~0.1 ms) instead of
  forking ``ip -j route`` (~5 ms and a process per poll), so the poll resolution is ~1-2 ms.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from tests.harness.agent_proc import (
    AgentProc,
    Backend,
    base_config,
)
from tests.harness.frr import BgpLab, build_bgp_lab, close_bgp_lab
from tests.harness.netns import tempdir

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results.json"
RAW = REPO / "bench" / "raw"
PY = Path(sys.executable)
BGP_LB = PY.parent / "bgp-lb"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- lab


@contextlib.contextmanager
def bgp_lab(n_lbs: int = 2, bfd: tuple[int, int] | None = None) -> Iterator[BgpLab]:
    """``bfd=(interval ms, multiplier)``: r1 runs bfdd and ties every session to BFD with
    that profile (a session whose BFD never came Up is not torn down: FRR 8.4)."""
    workdir = tempdir("bench-frr")
    os.chmod(workdir, 0o755)  # FRR daemons run as user frr
    bl = build_bgp_lab(workdir, n_lbs=n_lbs, bfd=bfd)
    try:
        yield bl
    finally:
        close_bgp_lab(bl)


@dataclass
class BenchAgent(AgentProc):
    """``AgentProc`` at info level (debug logging costs CPU) with the API timing log on."""

    log_level: str = "info"
    extra_env: dict[str, str] = field(default_factory=lambda: {"BGPLB_TIMING_LOG": "1"})
    start_timeout: float = 60.0


def make_agent(
    bl: BgpLab, n: int, services: list[dict[str, Any]], log_level: str = "info", **node: Any
) -> BenchAgent:
    workdir = tempdir("bench-agent")
    token = workdir / "token"
    token.write_text("bench-token\n")
    token.chmod(0o600)
    peers = [
        {
            "address": bl.r1_v4(n),
            "asn": bl.router.asn,
            "local_address": bl.lb_v4(n),
            "hold_time": node.pop("hold_time", 3),
        }
    ]
    node.setdefault("resync_interval", 10.0)  # the config default (the test harness uses 2 s)
    config = base_config(workdir, bl, n, peers, services, **node)
    config["node"]["log"]["level"] = log_level
    agent = BenchAgent(bl.lb_ns[n - 1], workdir, config)
    agent.log_level = log_level
    return agent


def make_backend(bl: BgpLab, n: int) -> Backend:
    www = tempdir("bench-www")
    (www / "index.html").write_text("ok\n")
    return Backend(bl.lb_ns[n - 1], bl.lb_v4(n), www)


# --------------------------------------------------------------------------- FIB


class FibProbe:
    """Is ``prefix`` (a /32) in r1's kernel FIB as a BGP route? One netlink socket in r1."""

    def __init__(self, ns: str) -> None:
        self._ipr = IPRoute(netns=ns)

    def close(self) -> None:
        self._ipr.close()

    def present(self, address: str) -> bool:
        try:
            routes = self._ipr.route("get", dst=address)
        except NetlinkError:
            return False
        # r1 has no default route: an answer with a gateway can only be the BGP route
        return any(r.get("RTA_GATEWAY") is not None for r in routes)

    def wait(self, address: str, present: bool, within: float, step: float = 0.001) -> float:
        """Poll until the route's presence is ``present``; returns time.time() when it was."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.present(address) == present:
                return time.time()
            time.sleep(step)
        raise TimeoutError(f"{address} present={present} not reached within {within}s")


# --------------------------------------------------------------------------- processes


REALTIME_PRIORITY = 10  # SCHED_FIFO: above every normal task, below the kernel's own threads


def tasks(pid: int) -> list[int]:
    """Every thread of process ``pid`` (FRR's daemons have several: bgpd's I/O and keepalive
    threads, zebra's dataplane thread)."""
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return []


def make_realtime(pids: list[int]) -> list[int]:
    """SCHED_FIFO for every thread of these processes (their children start normal): on a
    host shared with other jobs the router's daemons then run when their timers fire, as on a
    router's own CPU. Returns the thread ids changed."""
    param = os.sched_param(REALTIME_PRIORITY)
    done = []
    for pid in pids:
        for tid in tasks(pid):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setscheduler(tid, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, param)
                done.append(tid)
    return done


@contextlib.contextmanager
def realtime_self() -> Iterator[None]:
    """This thread at SCHED_FIFO while it measures (a FIB probe late by the host's load would
    add its lateness to the number). Its children inherit it: the trigger (``ip netns exec
    ... nft``) must act when the clock starts. With SCHED_RESET_ON_FORK it ran at nice 0 (not
    even the bench's nice -15) behind a TCG VM, and its start-up delay was counted as
    detection time (a first try: 8 of 79 trials > 400 ms, max 708 ms)."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    try:
        yield
    finally:
        os.sched_setscheduler(0, policy, param)


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime, cutime+cstime) in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st is not None:
                parents[int(d)] = st[0]
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in parents or p == root:
            out.append(p)
            todo += [c for c, pp in parents.items() if pp == p]
    return out


def cpu_ticks(pids: list[int]) -> dict[int, tuple[int, int]]:
    out = {}
    for p in pids:
        st = _stat(p)
        if st is not None:
            out[p] = (st[1], st[2])
    return out


def cpu_percent(roots: list[int], seconds: float) -> tuple[float, float]:
    """(own utime+stime, incl. reaped children) of the trees under ``roots`` over ``seconds``,
    in % of one core. Counted as the baseline did (/proc stat deltas)."""
    pids = [p for r in roots for p in tree(r)]
    before = cpu_ticks(pids)
    time.sleep(seconds)
    pids = [p for r in roots for p in tree(r)]
    after = cpu_ticks(pids)
    own = sum(a[0] - before.get(p, (0, 0))[0] for p, a in after.items())
    reaped = sum(a[1] - before.get(p, (0, 0))[1] for p, a in after.items())
    scale = 100.0 / (CLK_TCK * seconds)
    return own * scale, (own + reaped) * scale


def rss_kib(roots: list[int]) -> int:
    total = 0
    for p in (p for r in roots for p in tree(r)):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- results


def stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {}
    p99 = v[max(0, math.ceil(0.99 * len(v)) - 1)]  # nearest rank
    return {"p50": statistics.median(v), "p99": p99, "max": v[-1], "min": v[0]}


@dataclass(frozen=True)
class Record:
    benchmark: str
    metric: str
    unit: str
    value: float | None
    goal: str | None
    baseline: float | None
    trials: int
    command: str

    def as_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["value"] = None if self.value is None else round(self.value, 3)
        d["baseline"] = None if self.baseline is None else round(self.baseline, 3)
        d["date"] = datetime.now(UTC).isoformat(timespec="seconds")
        return d


def save(records: list[Record]) -> None:
    """Replace the records with the same (benchmark, metric) in results.json."""
    old: list[dict[str, Any]] = []
    if RESULTS.exists():
        old = json.loads(RESULTS.read_text())
    new = [r.as_json() for r in records]
    keys = {(r["benchmark"], r["metric"]) for r in new}
    kept = [r for r in old if (r["benchmark"], r["metric"]) not in keys]
    RESULTS.write_text(json.dumps(kept + new, indent=1) + "\n")


@contextlib.contextmanager
def load_logged(name: str) -> Iterator[None]:
    """Write the load average at the start and the end of a run to raw/load-NAME.json."""
    start = os.getloadavg()
    try:
        yield
    finally:
        save_raw(f"load-{name}", {"start": start, "end": os.getloadavg()})


def save_raw(name: str, data: Any) -> None:
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")


def timing_records(
    benchmark: str,
    metric: str,
    values_ms: list[float],
    command: str,
    goals: dict[str, str] | None = None,
    baseline: dict[str, float] | None = None,
) -> list[Record]:
    """p50/p99/max records of a list of milliseconds."""
    s = stats(values_ms)
    goals, baseline = goals or {}, baseline or {}
    return [
        Record(
            benchmark,
            f"{metric}:{k}",
            "ms",
            s.get(k),
            goals.get(k),
            baseline.get(k),
            len(values_ms),
            command,
        )
        for k in ("p50", "p99", "max")
    ]


def log_since(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """JSON log lines appended to ``path`` after ``offset``; returns them and the new offset."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out, offset + end


def ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["timestamp"])).timestamp()
