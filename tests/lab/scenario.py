"""The ECMP lab scenarios, shared by ``make demo`` and the lab tests.

Each returns a frozen result with the measured numbers; callers decide how to show or assert
them. Times are wall-clock seconds measured by polling the routers' kernel FIBs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .observe import (
    client_background,
    client_burst,
    client_ifaces,
    drain,
    fib_snapshot,
    interface_rx_packets,
    wait_for_line,
)
from .runner import Lab


@dataclass(frozen=True)
class Spread:
    counts: dict[str, dict[str, int]]  # vip -> node -> requests
    failures: int
    errors: dict[str, int]  # exception name -> count
    router_rx: dict[str, int]  # router -> packets received from the client


@dataclass(frozen=True)
class Convergence:
    node: str
    seconds: float  # from the trigger until the node left (or rejoined) every FIB
    others_stable: bool  # no other node's route left any FIB meanwhile
    polls: int
    unexpected: list[str] = field(default_factory=list)
    # (router, vip) -> (wall time of the last poll before that FIB changed, of the first after)
    changed: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class DrainResult:
    node: str
    withdraw_seconds: float
    requests: int
    failures: int  # failed requests that were NOT open across a next-hop change
    rate: float
    errors: list[str]
    # failed requests open while a router's ECMP set changed (reset: the router keeps no
    # per-flow state, so the flow was hashed to a node without its socket); counted, not hidden
    in_flight_resets: int
    in_flight_errors: list[str]
    node_answers_after_gone: int  # answers by the drained node after it left every FIB
    held: int
    held_reset: int
    held_reset_by_node: dict[str, int]


def spread(lab: Lab, count: int) -> Spread:
    ifaces = client_ifaces(lab)
    before = {r: interface_rx_packets(lab, r, i) for r, i in ifaces.items()}
    result = client_burst(lab, count)
    after = {r: interface_rx_packets(lab, r, i) for r, i in ifaces.items()}
    counts = {vip: dict(v["counts"]) for vip, v in result.items()}  # type: ignore[call-overload]
    failures = sum(int(v["failures"]) for v in result.values())  # type: ignore[call-overload]
    errors: dict[str, int] = {}
    for v in result.values():
        for name, n in v["errors"].items():  # type: ignore[call-overload]
            errors[name] = errors.get(name, 0) + n
    return Spread(counts, failures, errors, {r: after[r] - before[r] for r in ifaces})


POLL_INTERVAL = 0.05  # between two FIB polls while measuring (wait_membership)


@contextlib.contextmanager
def measuring() -> Iterator[None]:
    """The FIB polls are the instrument: while they run, this thread has a real-time priority
    (its children reset to normal), so a busy TCG guest cannot stretch the gap between two
    polls. Seen without it: 1.85 s between two 20 ms polls, which made a withdraw that
    happened somewhere after 2.4 s read as 4.24 s. The agents keep their own priority."""
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(10))
    except OSError:  # not allowed here: poll as before
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, policy, param)


def wait_membership(
    lab: Lab,
    node: str,
    present: bool,
    timeout: float,
    started: float,
    baseline: dict[tuple[str, str], tuple[str, ...]],
) -> Convergence:
    """Poll every FIB until ``node`` is (present) / is not (absent) a next hop everywhere;
    every other node of ``baseline`` (taken before the trigger) must stay everywhere."""
    with measuring():
        others = {k: set(v) - {node} for k, v in baseline.items()}
        unexpected: list[str] = []
        polls = 0
        last_poll = time.time()
        changed: dict[tuple[str, str], tuple[float, float]] = {}
        while True:
            # a dump reads the FIB at some instant between its start and its end: a change
            # seen first by this dump happened after the START of the previous one (the old
            # state was still there then) and before the END of this one
            polling = time.time()
            snap = fib_snapshot(lab)
            polled = time.time()
            polls += 1
            for key, nodes in snap.items():
                lost = others[key] - set(nodes)
                if lost:
                    unexpected.append(f"{key[0]} {key[1]}: lost {sorted(lost)}")
                if key not in changed and (node in nodes) == present:
                    changed[key] = (last_poll, polled)
            last_poll = polling
            if all((node in nodes) == present for nodes in snap.values()):
                took = time.monotonic() - started
                return Convergence(node, took, not unexpected, polls, unexpected, changed)
            if time.monotonic() - started > timeout:
                where = "absent from" if present else "in"
                raise TimeoutError(f"{node} still {where} a FIB after {timeout}s: {snap}")
            # 50 ms: a router's dump costs 0.8 ms of host CPU but several ms in the TCG guest,
            # at real-time priority; at 20 ms the polls of two routers took a large share of a
            # vCPU from the agents and the client during a drain (ci7: 10 requests/s in the
            # drain window against 25 before it). The bounds asserted are seconds.
            time.sleep(POLL_INTERVAL)


# What a flow hashed to a node without its socket sees: that node's RST (on recv or send), or
# the connection closed before the response. Refusals and timeouts are never explained by it.
RESET_ERRORS = ("ConnectionResetError", "BrokenPipeError", "RemoteDisconnected")


def open_across_change(record: Mapping[str, object], changed: Convergence) -> bool:
    """Was this request's connection open while a router's next hops for its VIP changed, and
    did it end in a reset? (started before the first poll that saw the change, ended after the
    last poll before it)"""
    if not str(record.get("error", "")).startswith(RESET_ERRORS):
        return False
    start = float(record["t"])  # type: ignore[arg-type]
    end = start + float(record["ms"]) / 1000.0  # type: ignore[arg-type]
    return any(
        start <= after and end >= before
        for (_, vip), (before, after) in changed.changed.items()
        if vip == record["vip"]
    )


def fail_backend(lab: Lab, node: str, timeout: float) -> Convergence:
    baseline = fib_snapshot(lab)
    started = time.monotonic()
    lab.stop_process(node, "backend", kill=True)  # a crash: no graceful shutdown to wait for
    return wait_membership(lab, node, False, timeout, started, baseline)


def restore_backend(lab: Lab, node: str, timeout: float) -> Convergence:
    baseline = fib_snapshot(lab)
    started = time.monotonic()
    lab.start_backend(node)
    return wait_membership(lab, node, True, timeout, started, baseline)


def drain_under_load(
    lab: Lab, node: str, service: str, workdir: Path, rate: float = 30.0, held: int = 12
) -> DrainResult:
    """Drain ``node`` while a client opens a new connection per request at ``rate``/s and
    ``held`` long-lived connections stay open; then undrain it."""
    vips = lab.vips()
    hold = client_background(
        lab, workdir / "hold.jsonl", "hold", vips[0], "--count", str(held), "--duration", "3600"
    )
    # 8 workers: each waits for its answer, and a TCG guest answers in 100-450 ms while the
    # routers change their FIBs; 4 could offer at most 4/0.2 s = 20 requests/s there (ci7)
    load = client_background(
        lab, workdir / "load.jsonl", "load", *vips,
        "--rate", str(rate), "--workers", "8", "--duration", "3600",
    )  # fmt: skip
    try:
        wait_for_line(workdir / "hold.jsonl", '"opened"', timeout=120)
        wait_for_line(workdir / "load.jsonl", '"node"', timeout=120)
        time.sleep(2.0)
        baseline = fib_snapshot(lab)
        started = time.monotonic()
        drain(lab, node, service)
        gone = wait_membership(lab, node, False, 60, started, baseline)
        gone_at = time.time()
        time.sleep(3.0)
    finally:
        lines = load.stop()
        held_lines = hold.stop()
    records = [r for r in lines if "summary" not in r]
    summary = next((r for r in lines if "summary" in r), {})
    hsum = next((r for r in held_lines if "summary" in r), {})
    late = [r for r in records if r.get("node") == node and float(r["t"]) > gone_at]  # type: ignore[arg-type]
    baseline = fib_snapshot(lab)
    drain(lab, node, service, undo=True)
    wait_membership(lab, node, True, 60, time.monotonic(), baseline)
    failed = [r for r in records if "error" in r]
    in_flight = [r for r in failed if open_across_change(r, gone)]
    other = [r for r in failed if r not in in_flight]
    return DrainResult(
        node=node,
        withdraw_seconds=gone.seconds,
        requests=len(records),
        failures=len(other),
        rate=float(summary.get("rate", 0.0)),  # type: ignore[arg-type]
        errors=sorted({str(r["error"]) for r in other})[:5],
        in_flight_resets=len(in_flight),
        in_flight_errors=sorted({str(r["error"]) for r in in_flight})[:5],
        node_answers_after_gone=len(late),
        held=int(hsum.get("connections", 0)),  # type: ignore[call-overload]
        held_reset=int(hsum.get("reset", 0)),  # type: ignore[call-overload]
        held_reset_by_node=dict(hsum.get("reset_by_node", {})),  # type: ignore[call-overload]
    )
