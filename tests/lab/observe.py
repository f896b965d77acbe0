"""Read a running lab: kernel FIBs, FRR RIBs, the agents' API and metrics, client runs.

The FIBs are read over netlink (fib.py, ~1 ms a poll); every other read is a subprocess with
a timeout (``ip``, ``vtysh``, ``curl`` in the node's namespace), started in parallel where
there are several: under TCG each costs ~0.5 s.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .fib import bgp_gateways
from .runner import REPO, Lab

API = "http://127.0.0.1:9180"

FibKey = tuple[str, str]  # (router, vip)


def _parallel(argvs: Sequence[Sequence[str]], timeout: float = 60.0) -> list[str]:
    procs = [
        subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for a in argvs
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(p.args)} failed: {stderr.strip()}")  # type: ignore[arg-type]
        out.append(stdout)
    return out


def fib_snapshot(lab: Lab) -> dict[FibKey, tuple[str, ...]]:
    """(router, vip) -> the lb nodes that are next hops in the router's kernel FIB."""
    owners = lab.address_owner()
    return {
        (r.name, v): tuple(sorted(owners.get(h, h) for h in bgp_gateways(lab.ns(r.name), v)))
        for r in lab.topology.by_role("router")
        for v in lab.vips()
    }


def fib_text(lab: Lab, router: str, vip: str) -> str:
    fam = "-6" if ":" in vip else "-4"
    return _parallel([["ip", fam, "-n", lab.ns(router), "route", "show", vip]])[0].strip()


def rib_nodes(lab: Lab, router: str, vip: str) -> tuple[str, ...]:
    """The lb nodes with a valid path for ``vip`` in the router's BGP RIB (vtysh json)."""
    r = lab.routers[router]
    fam = "ipv6" if ":" in vip else "ipv4"
    plen = 128 if ":" in vip else 32
    data = json.loads(r.vtysh(f"show bgp {fam} unicast {vip}/{plen} json") or "{}")
    owners = lab.address_owner()
    nodes = set()
    for path in data.get("paths", []):
        peer = path.get("peer", {}).get("peerId", "")
        if path.get("valid"):
            nodes.add(owners.get(peer, peer))
    return tuple(sorted(nodes))


def agent_get(lab: Lab, nodes: Sequence[str], path: str) -> dict[str, str]:
    argvs = [
        ["ip", "netns", "exec", lab.ns(n), "curl", "-sf", "--max-time", "20", f"{API}{path}"]
        for n in nodes
    ]
    return dict(zip(nodes, _parallel(argvs), strict=True))


def agent_status(lab: Lab) -> dict[str, dict[str, object]]:
    nodes = [n.name for n in lab.topology.by_role("lb")]
    return {n: json.loads(t) for n, t in agent_get(lab, nodes, "/api/v1/status").items()}


def advertised_metrics(text: str, service: str) -> dict[str, float]:
    """``bgplb_routes_advertised{service=...,peer=...}`` -> {peer: value}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^bgplb_routes_advertised\{(.*)\} (\S+)$", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("service") == service:
            out[labels.get("peer", "")] = float(m.group(2))
    return out


def agent_settings(lab: Lab, node: str) -> dict[str, Any]:
    """The agent config the runner wrote for ``node`` (bind targets mapped to lab paths)."""
    data = yaml.safe_load(lab.agent_config(node).read_text())
    assert isinstance(data, dict)
    return data


def drain(lab: Lab, node: str, service: str | None, undo: bool = False) -> str:
    """Drain (undrain) inside the node through the agent's API with its token: the request
    ``bgp-lb drain|undrain`` sends, made with curl, because the CLI is a Python start-up that
    took tens of seconds in a loaded TCG VM and would blur the measured drain time."""
    verb = "undrain" if undo else "drain"
    path = f"/api/v1/services/{service}/{verb}" if service else f"/api/v1/{verb}"
    api = agent_settings(lab, node)["node"]["api"]
    token = Path(api["token_file"]).read_text().strip()
    argv = ["ip", "netns", "exec", lab.ns(node), "curl", "-sS", "--fail-with-body"]
    argv += ["--max-time", "60", "-X", "POST", "-H", f"Authorization: Bearer {token}"]
    res = subprocess.run([*argv, f"{API}{path}"], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"{verb} on {node} failed: {res.stdout}{res.stderr}")
    return res.stdout.strip()


def client_argv(lab: Lab, mode: str, *args: str) -> list[str]:
    client = lab.topology.by_role("client")[0]
    sources = [str(c.address.ip) for c in client.commands if hasattr(c, "address")]
    lo = [s for s in sources if s.startswith("10.100.") or s.startswith("fd00:100:")]
    argv = ["ip", "netns", "exec", lab.ns(client.name), sys.executable, "-m", "tests.lab.client"]
    argv += [mode, *args]
    for s in lo:
        argv += ["--source", s]
    return argv


def client_burst(lab: Lab, count: int) -> dict[str, dict[str, object]]:
    argv = client_argv(lab, "burst", *lab.vips(), "--count", str(count))
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@dataclass
class Background:
    """A client run in the background (load or hold); ``stop()`` returns its JSON lines."""

    proc: subprocess.Popen[str]
    log: Path

    def stop(self, timeout: float = 120.0) -> list[dict[str, object]]:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=timeout)
        return [
            json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")
        ]

    def wait(self, timeout: float) -> list[dict[str, object]]:
        self.proc.wait(timeout=timeout)
        return self.stop()


def client_background(lab: Lab, log: Path, mode: str, *args: str) -> Background:
    out = log.open("w")
    proc = subprocess.Popen(
        client_argv(lab, mode, *args), stdout=out, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )
    out.close()
    return Background(proc, log)


def wait_for_line(log: Path, pattern: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and pattern in log.read_text():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{pattern!r} not in {log} within {timeout}s")


def interface_rx_packets(lab: Lab, router: str, iface: str) -> int:
    text = _parallel([["ip", "-n", lab.ns(router), "-s", "-j", "link", "show", iface]])[0]
    return int(json.loads(text)[0]["stats64"]["rx"]["packets"])


def client_ifaces(lab: Lab) -> Mapping[str, str]:
    """router -> its interface towards the client."""
    client = lab.topology.by_role("client")[0].name
    out = {}
    for link in lab.topology.links:
        for mine, other in ((link.a, link.b), (link.b, link.a)):
            if other.node == client and lab.topology.node(mine.node).role == "router":
                out[mine.node] = mine.iface
    return out
