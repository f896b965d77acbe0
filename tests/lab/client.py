"""The lab's client, run inside the client namespace: ``python -m tests.lab.client MODE ...``.

Standard library only (it starts fast under TCG). Every request names the node that answered.

    burst --count N VIP...           N requests per VIP, a new TCP connection each; prints one
                                     JSON summary: per-VIP counts per node, failures, errors
    load --rate R --duration S VIP...  new connection per request at R requests/s (VIPs taken in
                                     turn, --workers threads share the rate) until S seconds pass
                                     or SIGTERM/SIGINT; one JSON line per request, then a summary
    hold --count N --duration S VIP  N long-lived keep-alive connections, one request on each every
                                     0.5 s; counts the connections that got reset (not hidden)
    echo --count N --interval I VIP  N long-lived raw TCP connections to the byte echo (--port 7
                                     in the pool lab): each reads the real server's name, then
                                     sends one byte every I s and checks it comes back (one
                                     outstanding at a time). One thread (selectors): cheap under
                                     TCG. Prints a progress line every 5 s and, at the end, each
                                     connection (local port, server, echoes, longest wait, error)
                                     and the totals: reset/closed/bad echo/stalled, longest stall
"""

from __future__ import annotations

import argparse
import http.client
import json
import selectors
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import FrameType

TIMEOUT = 3.0  # --timeout overrides it (the pool lab: a starved TCG guest answers slowly)


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


@dataclass
class _Echo:
    sock: socket.socket
    server: str
    sport: int
    sent_at: float | None = None  # the outstanding byte's send time
    byte: int = 0
    echoes: int = 0
    late: int = 0  # echoes that took longer than 1 s (a stall that recovered)
    max_wait: float = 0.0
    error: str | None = None


def _greeting(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError("closed before the greeting")
        data += chunk
    return data.decode().strip()


def echo(args: argparse.Namespace) -> int:
    """Long-lived connections echoing a byte every ``--interval`` s; nothing is reopened, so
    every connection that breaks is counted (reset, closed, bad echo, or stalled longer than
    ``--give-up`` s)."""
    vip = args.vips[0]
    source = _source_for(vip, args.source)
    conns: list[_Echo] = []
    sel = selectors.DefaultSelector()
    for _ in range(args.count):
        sock = socket.create_connection(
            (vip, args.port), timeout=TIMEOUT, source_address=(source, 0) if source else None
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = _Echo(sock, _greeting(sock), sock.getsockname()[1])
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, c)
        conns.append(c)
    print(json.dumps({"opened": Counter(c.server for c in conns)}), flush=True)
    start = next_tick = last_report = time.monotonic()
    total = 0

    def fail(c: _Echo, why: str) -> None:
        c.error = why
        sel.unregister(c.sock)
        c.sock.close()

    while not STOP.is_set() and time.monotonic() - start < args.duration:
        if all(c.error for c in conns):
            break  # nothing left to measure
        now = time.monotonic()
        if now >= next_tick:
            for c in conns:
                if c.error is not None:
                    continue
                if c.sent_at is None:
                    c.byte = (c.byte + 1) % 256
                    try:
                        c.sock.send(bytes([c.byte]))
                        c.sent_at = now
                    except OSError as e:
                        fail(c, type(e).__name__)
                elif now - c.sent_at > args.give_up:
                    fail(c, "stalled")
            next_tick = max(next_tick + args.interval, now)
        if now - last_report >= 5.0:
            last_report = now
            waiting = [now - c.sent_at for c in conns if c.sent_at is not None and not c.error]
            progress: dict[str, float] = {"t": round(time.time(), 3), "echoes": total}
            progress["broken"] = sum(1 for c in conns if c.error)
            progress["waiting_max"] = round(max(waiting, default=0.0), 3)
            print(json.dumps(progress), flush=True)
        for key, _ in sel.select(timeout=max(0.0, next_tick - time.monotonic())):
            c = key.data
            try:
                data = c.sock.recv(16)
            except OSError as e:
                fail(c, type(e).__name__)
                continue
            if not data:
                fail(c, "closed")
            elif c.sent_at is None or data != bytes([c.byte]):
                fail(c, "bad echo")
            else:
                wait = time.monotonic() - c.sent_at
                c.max_wait = max(c.max_wait, wait)
                c.late += wait > 1.0
                c.echoes += 1
                total += 1
                c.sent_at = None
    elapsed = time.monotonic() - start
    now = time.monotonic()
    for c in conns:  # an echo still outstanding at the end counts as a wait too
        if c.sent_at is not None and c.error is None:
            c.max_wait = max(c.max_wait, now - c.sent_at)
    for c in conns:
        rec: dict[str, object] = {"sport": c.sport, "server": c.server, "echoes": c.echoes}
        rec["late"] = c.late
        rec["max_wait"] = round(c.max_wait, 3)
        if c.error:
            rec["error"] = c.error
        print(json.dumps(rec), flush=True)
    broken = [c for c in conns if c.error]
    summary: dict[str, object] = {"summary": True, "connections": len(conns)}
    summary["reset"] = len(broken)
    summary["reasons"] = dict(Counter(str(c.error) for c in broken))
    summary["reset_by_server"] = dict(Counter(c.server for c in broken))
    summary["echoes"] = total
    summary["echo_rate"] = round(total / elapsed, 1) if elapsed else 0.0
    summary["max_stall"] = round(max((c.max_wait for c in conns), default=0.0), 3)
    summary["late"] = sum(c.late for c in conns)
    print(json.dumps(summary), flush=True)
    for c in conns:
        if c.error is None:
            c.sock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    global TIMEOUT
    p = argparse.ArgumentParser(prog="python -m tests.lab.client")
    p.add_argument("mode", choices=["burst", "load", "hold", "echo"])
    p.add_argument("vips", nargs="+")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--source", action="append", default=[], help="source address (per family)")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--rate", type=float, default=25.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=4, help="load: threads sharing the rate")
    p.add_argument("--interval", type=float, default=0.1, help="echo: seconds between bytes")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per socket operation")
    p.add_argument("--give-up", type=float, default=60.0, help="echo: a longer wait breaks it")
    args = p.parse_args(argv)
    TIMEOUT = args.timeout
    socket.setdefaulttimeout(TIMEOUT)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    modes = {"burst": burst, "load": load, "hold": hold, "echo": echo}
    return modes[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
