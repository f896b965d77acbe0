"""Benchmark 4: planned maintenance, a client opening new connections while each of 3 nodes is
taken out and restarted in turn: with a drain first, and with a plain stop for comparison.

``python -m bench.maintenance [--reps 3] [--rate 50]`` (root). r1 = FRR 8.4 with ECMP over
lb1..lb3 (``build_bgp_lab``, L4 hashing ``fib_multipath_hash_policy=1``); every lbN runs
``bgp-lb run`` (announce mode, the same VIP 10.99.0.1 on ``lo``, config defaults for the check,
drain_delay and shutdown_grace) and the lab's backend (containerlab/node/backend.py on
0.0.0.0:8080, answers with its node name). A client namespace c1 behind r1 runs the lab client
(tests/lab/client.py ``load``: a new TCP connection per request, ``--workers`` threads sharing
``--rate``) and records every request (time, node or error).

Procedures, each over lb1, lb2, lb3 in turn (``--reps`` repetitions of the whole set):

- **drain**: ``bgp-lb drain --all`` (the node, through the agent's admin API) -> wait until
  r1's FIB no longer has the node -> 1 s for requests in flight -> SIGTERM agent and backend
  -> start both -> the drained state persists across the restart, so ``bgp-lb undrain --all``
  -> wait until the node is back in r1's FIB -> 3 s pause.
- **plain**: SIGKILL the backend and SIGTERM the agent at once -> start both -> wait until the
  node is back in r1's FIB -> 3 s pause.

r1's FIB is polled (one netlink socket, every 2 ms) by a thread for the whole run; its timeline
is kept so each failed request can be set against the FIB changes around it. The lab pieces
(FIB watch, client namespace, backend, client) are in bench/maintenance_lab.py.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import time
from collections import Counter
from typing import Any

from tests.harness.agent_proc import BACKEND_PORT, AgentProc
from tests.harness.frr import BgpLab
from tests.harness.netns import kill_pids, ns_pids

from .convergence import DEFAULT, agent_service
from .lab import (
    Record,
    bgp_lab,
    load_logged,
    make_agent,
    save,
    save_raw,
    stats,
    timing_records,
    ts,
)
from .maintenance_lab import Client, FibWatch, Hops, Node, NodeBackend, add_client, r1_hash_policy

BENCH = "4 planned maintenance"
COMMAND = "make bench (python -m bench.maintenance)"
VIP = "10.99.0.1"
SERVICE = "web"
IN_FLIGHT = 1.0  # drain: wait this long after the FIB change before stopping
PAUSE = 3.0  # after a node is back, before the next one


# --------------------------------------------------------------------------- procedures


def _drain_logged_at(agent: AgentProc, after: float) -> float | None:
    found = [ts(x) for x in agent.events("drain") if ts(x) >= after - 1.0]
    return found[-1] if found else None


def maintain(node: Node, watch: FibWatch, drain: bool) -> dict[str, Any]:
    """Take one node out and back; returns the wall-clock times of each step."""

    def gone(hops: Hops) -> bool:
        return node.address not in hops

    step: dict[str, Any] = {"node": f"lb{node.n}", "start": time.time()}
    if drain:
        node.agent.cli("drain", "--all")
        step["drain_logged"] = _drain_logged_at(node.agent, step["start"])
        step["out"] = watch.wait(gone, 30, step["start"])
        time.sleep(IN_FLIGHT)
        step["stop"] = time.time()
        node.agent.signal(signal.SIGTERM)
        node.backend.stop(signal.SIGTERM)
    else:
        step["stop"] = time.time()
        node.backend.stop(signal.SIGKILL)
        node.agent.signal(signal.SIGTERM)
        step["out"] = watch.wait(gone, 30, step["stop"])
    step["agent_exit"] = node.agent.wait(60)
    node.backend.reap()
    step["stopped"] = time.time()
    node.start()
    step["restarted"] = time.time()
    if drain:
        node.agent.cli("undrain", "--all")
        step["undrain"] = time.time()
    step["back"] = watch.wait(lambda hops: node.address in hops, 120, step["restarted"])
    time.sleep(PAUSE)
    return step


def procedure(
    nodes: list[Node], watch: FibWatch, c1: str, drain: bool, rate: float, workers: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    everyone = tuple(sorted(n.address for n in nodes))
    watch.wait(lambda hops: hops == everyone, 120, time.time())
    client = Client(c1, VIP, rate, workers)
    time.sleep(PAUSE)  # warm-up: requests to all three nodes first
    if client.count() == 0:
        raise RuntimeError("the client made no request in the warm-up")
    watch.take_gaps()
    t0 = time.time()
    steps = []
    for node in nodes:
        steps.append(maintain(node, watch, drain))
        s = steps[-1]
        print(
            f"  lb{node.n}: out {_ms(s['out'] - s.get('drain_logged', s['stop']))} ms after "
            f"{'the drain' if drain else 'the stop'}, back after {s['back'] - s['out']:.1f} s",
            flush=True,
        )
    requests, summary = client.stop()
    timeline, windows = watch.since(t0 - PAUSE)
    gaps = watch.take_gaps()
    result = {
        "drain": drain,
        "t0": t0,
        "steps": steps,
        "summary": summary,
        "timeline": timeline,
        # how late each FIB change can have been seen: the poll interval before it
        "windows": windows,
        "fib_poll_gaps_over_20ms": {"count": len(gaps), "max_ms": _ms(max(gaps, default=0))},
    }
    return result, requests


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


# --------------------------------------------------------------------------- analysis


def analyse(result: dict[str, Any], requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Every failure with its likely cause:

    - ``refused``: no listener (the backend is gone and r1 still sends new connections there);
    - ``rehash``: any other failure of a request in flight while r1's next-hop set changed
      (opened before, not answered before; the change is known to within the poll interval
      before it was seen). ECMP hashing then moves some flows to another node, which has no
      socket for the flow and answers with a reset;
    - ``reset``: any other failure (e.g. a connection accepted by a backend as it was killed).

    Per node taken out: answers it gave to connections opened after it was seen out of the
    FIB (must be 0)."""
    seen = zip(result["timeline"][1:], result["windows"], strict=True)
    changes = [(t - w, t) for (t, _), w in seen]

    def across(x: dict[str, Any]) -> bool:
        start, end = x["t"], x["t"] + x["ms"] / 1000
        return any(start < seen and end > since for since, seen in changes)

    failed = []
    for r in (x for x in requests if "error" in x):
        near = min((c[1] for c in changes), key=lambda c: abs(c - r["t"]), default=None)
        step = next((s for s in result["steps"] if s["start"] <= r["t"] <= s["back"] + 1), None)
        cause = "refused" if "Refused" in r["error"] else "rehash" if across(r) else "reset"
        failed.append(
            {
                **r,
                "cause": cause,
                "nearest_fib_change_s": None if near is None else round(near - r["t"], 4),
                "during": step["node"] if step else None,
            }
        )
    in_flight = [x for x in requests if across(x)]
    back_since = {
        s["node"]: next((a for a, b in changes if b == s["back"]), s["back"])
        for s in result["steps"]
    }
    latency = sorted(x["ms"] for x in requests)
    return {
        "requests": len(requests),
        "failed": len(failed),
        "errors": dict(Counter(f["error"].split(":")[0] for f in failed)),
        "causes": dict(Counter(f["cause"] for f in failed)),
        "in_flight_across_fib_change": len(in_flight),
        "failed_in_flight_across_fib_change": sum(1 for x in in_flight if "error" in x),
        "latency_ms": stats(latency),
        "failures": failed,
        "answered_by": dict(Counter(x.get("node", "error") for x in requests)),
        "answered_after_out": {
            s["node"]: sum(
                1
                for x in requests
                if x.get("node") == s["node"] and s["out"] <= x["t"] < back_since[s["node"]]
            )
            for s in result["steps"]
        },
    }


def compact(result: dict[str, Any], requests: list[dict[str, Any]]) -> dict[str, Any]:
    """The raw record: every request as "t-t0 node|error" (seconds), the FIB timeline."""
    t0: float = result["t0"]

    def rel(t: float) -> float:
        return round(t - t0, 4)

    steps = [
        {k: rel(v) if isinstance(v, float) and k != "agent_exit" else v for k, v in s.items()}
        for s in result["steps"]
    ]
    return {
        "t0": t0,
        "steps": steps,
        "fib_timeline": [[rel(t), list(h)] for t, h in result["timeline"]],
        "requests": [
            f"{rel(x['t'])} {x.get('node') or x.get('error')} {x['ms']}" for x in requests
        ],
        "client_summary": result["summary"],
        "fib_change_windows_ms": [_ms(w) for w in result["windows"]],
        "fib_poll_gaps_over_20ms": result["fib_poll_gaps_over_20ms"],
    }


# --------------------------------------------------------------------------- main


def make_nodes(bl: BgpLab) -> list[Node]:
    nodes = []
    for n in range(1, len(bl.lb_ns) + 1):
        svc = agent_service(SERVICE, VIP, bl.lb_v4(n), BACKEND_PORT, "/", DEFAULT)
        agent = make_agent(bl, n, [svc], drain_delay=5, shutdown_grace=3)  # config defaults
        nodes.append(Node(n, bl.lb_v4(n), agent, NodeBackend(agent.ns, f"lb{n}")))
    return nodes


def records(out: dict[str, list[dict[str, Any]]]) -> list[Record]:
    recs: list[Record] = []
    for name, label in (("drain", "with drain"), ("plain", "plain stop (comparison)")):
        runs = out.get(name, [])
        if not runs:
            continue
        bench = f"{BENCH}: {label}"
        goal = "<= 0" if name == "drain" else None
        failed = sum(r["analysis"]["failed"] for r in runs)
        total = sum(r["analysis"]["requests"] for r in runs)
        recs += [
            Record(
                bench,
                "failed requests (sum over reps)",
                "requests",
                failed,
                goal,
                None,
                len(runs),
                COMMAND,
            ),
            Record(
                bench, "requests (sum over reps)", "requests", total, None, None, len(runs), COMMAND
            ),
        ]
        for cause, what in (
            ("rehash", "in flight across an ECMP next-hop change, reset"),
            ("refused", "refused, node still in the FIB without a backend"),
            ("reset", "reset otherwise"),
        ):
            n = sum(r["analysis"]["causes"].get(cause, 0) for r in runs)
            recs.append(
                Record(bench, f"failed: {what}", "requests", n, None, None, len(runs), COMMAND)
            )
        steps = [s for r in runs for s in r["steps"]]
        if name == "drain":
            recs += timing_records(
                bench,
                "drain (agent took it) -> node out of r1's FIB",
                [(s["out"] - s["drain_logged"]) * 1000 for s in steps if s.get("drain_logged")],
                COMMAND,
            )
        else:
            recs += timing_records(
                bench,
                "stop -> node out of r1's FIB",
                [(s["out"] - s["stop"]) * 1000 for s in steps],
                COMMAND,
            )
        recs += timing_records(
            bench,
            "node out of r1's FIB (out -> back)",
            [(s["back"] - s["out"]) * 1000 for s in steps],
            COMMAND,
        )
    return recs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--procedures", default="drain,plain")
    args = ap.parse_args()
    out: dict[str, list[dict[str, Any]]] = {}
    with load_logged("maintenance"), bgp_lab(n_lbs=3) as bl:
        c1 = add_client(bl)
        nodes = make_nodes(bl)
        watch = FibWatch(bl.router.ns, VIP)
        try:
            for node in nodes:
                node.start()
            everyone = tuple(sorted(n.address for n in nodes))
            watch.wait(lambda hops: hops == everyone, 120, time.time())
            policy = r1_hash_policy(bl)
            print(
                f"r1: {VIP} via {', '.join(everyone)}; fib_multipath_hash_policy={policy}",
                flush=True,
            )
            if policy != 1:
                raise RuntimeError("r1 does not hash on L4: the client's flows would not spread")
            for rep in range(1, args.reps + 1):
                for name in args.procedures.split(","):
                    print(f"== {name} rep {rep}/{args.reps}", flush=True)
                    result, requests = procedure(
                        nodes, watch, c1, name == "drain", args.rate, args.workers
                    )
                    a = analyse(result, requests)
                    print(
                        f"  {a['requests']} requests, {a['failed']} failed {a['errors']}"
                        f" {a['causes']}"
                        f" ({a['failed_in_flight_across_fib_change']} of them in flight across a"
                        f" FIB change, of {a['in_flight_across_fib_change']} such requests);"
                        f" answered by {a['answered_by']}; latency {a['latency_ms']}",
                        flush=True,
                    )
                    raw = {**compact(result, requests), "analysis": a}
                    save_raw(f"maintenance-{name}-rep{rep}", raw)
                    out.setdefault(name, []).append({"steps": result["steps"], "analysis": a})
        finally:
            watch.close()
            for node in nodes:
                node.agent.kill()
                inside = set(ns_pids(node.agent.ns))  # ExaBGP dies with the agent; make sure
                kill_pids([p for p in node.agent.exabgp_pids() if p in inside])
                node.backend.stop(signal.SIGKILL)
                node.backend.reap()
                shutil.rmtree(node.agent.workdir, ignore_errors=True)
    save(records(out))


if __name__ == "__main__":
    main()
