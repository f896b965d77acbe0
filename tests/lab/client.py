"""The lab's client, run inside the client namespace: ``python -m tests.lab.client MODE ...``.

Standard library only (it starts fast under TCG). Every request names the node that answered.

    burst --count N VIP...           N requests per VIP, a new TCP connection each; prints one
                                     JSON summary: per-VIP counts per node, failures, errors
    load --rate R --duration S VIP...  new connection per request at R requests/s (VIPs taken in
                                     turn, --workers threads share the rate) until S seconds pass
                                     or SIGTERM/SIGINT; one JSON line per request, then a summary
    hold --count N --duration S VIP  N long-lived keep-alive connections, one request on each every
                                     0.5 s; counts the connections that got reset (not hidden)
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import sys
import threading
import time
from collections import Counter
from types import FrameType

TIMEOUT = 3.0


def _source_for(vip: str, sources: list[str]) -> str | None:
    want = 6 if ":" in vip else 4
    return next((s for s in sources if (6 if ":" in s else 4) == want), None)


def request(vip: str, port: int, source: str | None) -> str:
    """One GET over a new connection; returns the node name (raises on failure)."""
    conn = http.client.HTTPConnection(
        vip, port, timeout=TIMEOUT, source_address=(source, 0) if source else None
    )
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode().strip()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        return body
    finally:
        conn.close()


def burst(args: argparse.Namespace) -> int:
    out: dict[str, object] = {}
    for vip in args.vips:
        counts: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for _ in range(args.count):
            try:
                counts[request(vip, args.port, _source_for(vip, args.source))] += 1
            except (OSError, RuntimeError, http.client.HTTPException) as e:
                errors[type(e).__name__] += 1
        out[vip] = {
            "counts": dict(counts),
            "failures": sum(errors.values()),
            "errors": dict(errors),
        }
    print(json.dumps(out), flush=True)
    return 0


STOP = threading.Event()  # set by SIGTERM/SIGINT: the run ends and prints its summary


def _stop(signum: int, frame: FrameType | None) -> None:
    STOP.set()


def load(args: argparse.Namespace) -> int:
    """``--workers`` threads share the rate, so one slow request does not lower it."""
    lock = threading.Lock()
    counter = iter(range(1 << 62))
    nodes: Counter[str] = Counter()
    failures = [0]
    start = time.monotonic()
    period = args.workers / args.rate

    def worker(offset: float) -> None:
        next_at = start + offset
        while not STOP.is_set() and time.monotonic() - start < args.duration:
            with lock:
                n = next(counter)
            vip = args.vips[n % len(args.vips)]
            t = time.time()
            rec: dict[str, object] = {"t": round(t, 3), "vip": vip}
            try:
                node = request(vip, args.port, _source_for(vip, args.source))
                rec["node"] = node
            except (OSError, RuntimeError, http.client.HTTPException) as e:
                node = None
                rec["error"] = f"{type(e).__name__}: {e}"
            rec["ms"] = round((time.time() - t) * 1000, 1)
            with lock:
                if node is None:
                    failures[0] += 1
                else:
                    nodes[node] += 1
                print(json.dumps(rec), flush=True)
            next_at += period
            STOP.wait(max(0.0, next_at - time.monotonic()))

    threads = [
        threading.Thread(target=worker, args=(i * period / args.workers,), daemon=True)
        for i in range(args.workers)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - start
    n = sum(nodes.values()) + failures[0]
    summary = {"summary": True, "requests": n, "failures": failures[0], "nodes": dict(nodes)}
    summary["rate"] = round(n / elapsed, 1) if elapsed else 0.0
    print(json.dumps(summary), flush=True)
    return 0


def hold(args: argparse.Namespace) -> int:
    """Long-lived connections: which node each is on, and how many got reset."""
    vip = args.vips[0]
    source = _source_for(vip, args.source)
    conns: list[tuple[http.client.HTTPConnection, str]] = []
    for _ in range(args.count):
        c = http.client.HTTPConnection(
            vip, args.port, timeout=TIMEOUT, source_address=(source, 0) if source else None
        )
        c.request("GET", "/")
        conns.append((c, c.getresponse().read().decode().strip()))
    print(json.dumps({"opened": Counter(node for _, node in conns)}), flush=True)
    broken: dict[int, str] = {}
    end = time.monotonic() + args.duration
    while time.monotonic() < end and not STOP.is_set():
        STOP.wait(0.5)
        for i, (c, node) in enumerate(conns):
            if i in broken:
                continue
            try:
                c.request("GET", "/")
                answer = c.getresponse().read().decode().strip()
                if answer != node:
                    broken[i] = f"moved to {answer}"
            except (OSError, http.client.HTTPException) as e:
                broken[i] = type(e).__name__
    by_node: Counter[str] = Counter(conns[i][1] for i in broken)
    print(
        json.dumps(
            {
                "summary": True,
                "connections": len(conns),
                "reset": len(broken),
                "reset_by_node": dict(by_node),
                "reasons": dict(Counter(broken.values())),
            }
        ),
        flush=True,
    )
    for c, _ in conns:
        c.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.lab.client")
    p.add_argument("mode", choices=["burst", "load", "hold"])
    p.add_argument("vips", nargs="+")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--source", action="append", default=[], help="source address (per family)")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--rate", type=float, default=25.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=4, help="load: threads sharing the rate")
    args = p.parse_args(argv)
    socket.setdefaulttimeout(TIMEOUT)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return {"burst": burst, "load": load, "hold": hold}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
