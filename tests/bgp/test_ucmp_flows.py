"""UCMP from healthy capacity, measured in flows (issue 14 item 3): two agents (lb1, lb2) announce
the same VIPs (v4 and v6) with ``link_bandwidth: auto`` from their real servers' health: lb1 has
4 real servers, lb2 has 2, all weight 1, each a TCP listener in the node's own server namespace
(rsN), health-checked for real by the agent. r1 (FRR 8.4, no link-bandwidth knob, L4 multipath
hash) forwards 2,000 distinct UDP flows from a client namespace behind it; nft counters on r1's
links to lb1 and lb2 count which node got each flow. 4 : 2 healthy -> lb1 gets 2/3 of the flows
(+-10 %); two of lb1's servers stopped (2 : 2) -> after the change (hold-down 1 s) reaches r1,
2,000 new flows split 1 : 1 (+-10 %). Same for IPv6.

The agents run on the fake dataplane (tests/harness/fakedp_agent.py: ipvs-mode services need
IPVS and dummy links, which the host kernel lacks); everything BGP and health is real. The
waits on r1's FIB weights do not fail by themselves: the flow ratio is the assertion (a node
announcing the wrong capacity shows up as a wrong split, with the FIB weights in the message).
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.bgp.test_ucmp import weights
from tests.harness import fakedp_agent
from tests.harness.agent_proc import STEADY_CHECK, AgentFactory, AgentProc, peer
from tests.harness.frr import BgpLab, Router, wait_until
from tests.harness.netns import run

pytestmark = pytest.mark.bgp

VIP4, VIP6 = "10.99.0.1", "fd00:99::1"
FLOWS = 2000
FLOW_PORT = 9  # the UDP destination port of the flows (discard)
RS_PORT = 9001  # real server k listens on RS_PORT + k
SERVERS = {1: 4, 2: 2}  # real servers per LB node
CLIENT_V4, CLIENT_V6 = "10.0.100.2", "fd00:100::2"

LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
s.listen(128)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

SENDER = """
import socket, sys
vip, first, count, dport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
family = socket.AF_INET6 if ":" in vip else socket.AF_INET
for port in range(first, first + count):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind(("", port))
        s.sendto(b"x", (vip, dport))
"""


@dataclass
class RealServers:
    """TCP listeners (dual stack) in namespace ``ns``, one process per real server."""

    ns: str
    procs: dict[int, subprocess.Popen[str]] = field(default_factory=dict)

    def start(self, port: int) -> None:
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-c", LISTENER, str(port)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.procs[port] = proc
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready" once it listens (EOF if it died)
        assert line.strip() == "ready", f"listener {self.ns}:{port} did not start"

    def stop(self, port: int) -> None:
        proc = self.procs.pop(port)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    def stop_all(self) -> None:
        for port in list(self.procs):
            self.stop(port)


@contextlib.contextmanager
def real_servers(bl: BgpLab) -> Iterator[dict[int, RealServers]]:
    """rsN behind lbN (lbN 10.2.N.1 / fd02:N::1, rsN 10.2.N.2 / fd02:N::2) with SERVERS[N]
    listeners on RS_PORT + k."""
    made: dict[int, RealServers] = {}
    try:
        for n, count in SERVERS.items():
            ns = bl.lab.add_ns(f"rs{n}")
            bl.lab.link(
                bl.lb_ns[n - 1],
                "rs",
                ns,
                "eth0",
                [f"10.2.{n}.1/24", f"fd02:{n}::1/64"],
                [f"10.2.{n}.2/24", f"fd02:{n}::2/64"],
            )
            made[n] = RealServers(ns)
            for k in range(count):
                made[n].start(RS_PORT + k)
        yield made
    finally:
        for servers in made.values():
            servers.stop_all()


def ucmp_service(n: int) -> dict[str, Any]:
    """An ipvs-mode service whose v4 and v6 VIP each have SERVERS[n] real servers (weight 1,
    tcp-checked), with link_bandwidth auto and a 1 s hold-down."""
    rs = [
        {"address": address, "port": RS_PORT + k, "checks": [{"type": "tcp", **STEADY_CHECK}]}
        for address in (f"10.2.{n}.2", f"fd02:{n}::2")
        for k in range(SERVERS[n])
    ]
    return {
        "name": "web",
        "vips": [VIP4, VIP6],
        "ports": [{"port": 80}],
        "real_servers": rs,
        "link_bandwidth": {"mode": "auto", "hold_down": 1},
    }


def client(bl: BgpLab) -> str:
    """c1 behind r1 (r1 10.0.100.1 / fd00:100::1), default routes through r1."""
    ns = bl.lab.add_ns("c1")
    bl.lab.link(
        bl.router.ns,
        "c1",
        ns,
        "eth0",
        ["10.0.100.1/24", "fd00:100::1/64"],
        [f"{CLIENT_V4}/24", f"{CLIENT_V6}/64"],
    )
    run("ip", "-n", ns, "route", "add", "default", "via", "10.0.100.1")
    run("ip", "-6", "-n", ns, "route", "add", "default", "via", "fd00:100::1")
    return ns


def counters(router: Router) -> None:
    """Named nft counters on r1: flows to each VIP forwarded out of each lb link."""
    rules = ["table inet ucmp {"]
    for fam in ("ip", "ip6"):
        for n in SERVERS:
            rules.append(f"  counter {fam}_lb{n} {{ }}")
    rules.append("  chain flows {")
    rules.append("    type filter hook forward priority 0; policy accept;")
    for fam, vip in (("ip", VIP4), ("ip6", VIP6)):
        for n in SERVERS:
            rules.append(
                f'    oifname "lb{n}" {fam} daddr {vip} udp dport {FLOW_PORT} '
                f"counter name {fam}_lb{n}"
            )
    rules += ["  }", "}"]
    subprocess.run(
        ["ip", "netns", "exec", router.ns, "nft", "-f", "-"],
        input="\n".join(rules) + "\n",
        text=True,
        check=True,
        timeout=10,
    )


def packets(router: Router, name: str) -> int:
    out = json.loads(
        run("ip", "netns", "exec", router.ns, "nft", "-j", "list", "counter", "inet", "ucmp", name)
    )
    for item in out["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    raise AssertionError(f"no counter {name}: {out}")


def per_node(router: Router, fam: str) -> dict[int, int]:
    return {n: packets(router, f"{fam}_lb{n}") for n in SERVERS}


def checks_up(agent: AgentProc) -> int:
    """How many of the service's checks (one per real server and family) the agent has up."""
    svc = next(x for x in agent.status()["services"] if x["name"] == "web")
    return sum(1 for c in svc["checks"] if c["status"] == "up")


def counted(router: Router, fam: str, total: int) -> bool:
    return sum(per_node(router, fam).values()) >= total


async def settle(router: Router, want: dict[str, dict[str, int]], within: float) -> bool:
    """Wait (up to ``within``) until r1's FIB has ``want`` (VIP -> next hop -> weight) for
    every VIP; False if it did not (the flow ratio then tells what went wrong)."""
    try:
        await wait_until(
            lambda: all(weights(router, vip) == hops for vip, hops in want.items()),
            within,
            interval=0.25,
        )
    except AssertionError:
        return False
    return True


async def split(bl: BgpLab, client_ns: str, vip: str, first_port: int) -> tuple[float, str]:
    """lb1's share of FLOWS new UDP flows (source ports first_port...) to ``vip`` through r1,
    and a line describing the measurement. Flows sent while r1's weights changed (a probe
    slowed by a busy host, a late UPDATE) are measured again."""
    r1 = bl.router
    fam = "ip6" if ":" in vip else "ip"
    for attempt in range(3):
        port = first_port + attempt * FLOWS
        before_w, before = weights(r1, vip), per_node(r1, fam)
        run(
            "ip",
            "netns",
            "exec",
            client_ns,
            sys.executable,
            "-c",
            SENDER,
            vip,
            str(port),
            str(FLOWS),
            str(FLOW_PORT),
            timeout=60,
        )

        total = sum(before.values()) + FLOWS
        # forwarding runs a little behind the sender
        await wait_until(functools.partial(counted, r1, fam, total), 20, interval=0.1)
        after = per_node(r1, fam)
        if weights(r1, vip) != before_w:
            print(
                f"{vip}: r1's weights changed while measuring ({before_w} -> "
                f"{weights(r1, vip)}), again"
            )
            continue
        got = {n: after[n] - before[n] for n in SERVERS}
        assert sum(got.values()) == FLOWS, got
        share = got[1] / FLOWS
        return (
            share,
            f"{vip}: lb1 {got[1]} lb2 {got[2]} of {FLOWS} (lb1 {share:.3f}), FIB {before_w}",
        )
    raise AssertionError(f"r1's weights for {vip} kept changing while flows were sent")


async def test_flows_follow_the_healthy_capacity_v4_and_v6(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=2)
    r1 = bl.router
    run("ip", "netns", "exec", r1.ns, "sysctl", "-qw", "net.ipv6.fib_multipath_hash_policy=1")
    c1 = client(bl)
    counters(r1)
    nh = {VIP4: {n: bl.lb_v4(n) for n in SERVERS}, VIP6: {n: bl.lb_v6(n) for n in SERVERS}}
    with real_servers(bl) as servers:
        agents: dict[int, AgentProc] = {}
        for n in SERVERS:
            agents[n], _ = agent_factory(
                bl,
                n,
                peers=[peer(bl, n, next_hop_v6=bl.lb_v6(n))],
                services=[ucmp_service(n)],
                start=False,
                command=fakedp_agent.COMMAND,
            )
            agents[n].start_timeout = 60  # 9-15 s on a loaded 2-core host
            agents[n].start()

        # both nodes' routes in r1's FIB (whatever the weights): the sessions and checks are up
        await wait_until(
            lambda: all(sorted(weights(r1, vip)) == sorted(nh[vip].values()) for vip in nh),
            90,
            interval=0.25,
        )
        for n in SERVERS:  # warm r1's neighbour entries: no flow waits on ARP / ND
            run("ip", "netns", "exec", r1.ns, "ping", "-c1", "-W2", bl.lb_v4(n), check=False)
            run("ip", "netns", "exec", r1.ns, "ping", "-c1", "-W2", bl.lb_v6(n), check=False)

        # the agents see every real server up (v4 and v6 checks): 4 and 2 per family
        await wait_until(
            lambda: [checks_up(agents[n]) for n in SERVERS] == [2 * c for c in SERVERS.values()],
            60,
            interval=0.25,
        )
        # 4 : 2 healthy -> FRR's 100 x bw / total: 66 / 33
        want = {vip: {nh[vip][1]: 66, nh[vip][2]: 33} for vip in nh}
        settled = await settle(r1, want, 60)
        for vip in (VIP4, VIP6):
            share, line = await split(bl, c1, vip, 10000)
            print(f"4:2 healthy (settled: {settled}) {line}")
            assert 0.600 <= share <= 0.733, f"4:2 healthy should split 2:1 +-10 %: {line}"

        # two of lb1's real servers stop: 2 : 2 -> 1 : 1 once the hold-down has passed
        servers[1].stop(RS_PORT + 2)
        servers[1].stop(RS_PORT + 3)
        await wait_until(lambda: checks_up(agents[1]) == 4, 30, interval=0.25)  # 2 per family
        want = {vip: {nh[vip][1]: 50, nh[vip][2]: 50} for vip in nh}
        settled = await settle(r1, want, 60)
        for vip, prefix in ((VIP4, f"ipv4 unicast {VIP4}/32"), (VIP6, f"ipv6 unicast {VIP6}/128")):
            paths = r1.vtysh_json(f"show bgp {prefix} json").get("paths", [])
            assert isinstance(paths, list)
            print(vip, [p.get("extendedCommunity", {}).get("string") for p in paths])
        for vip in (VIP4, VIP6):
            share, line = await split(bl, c1, vip, 20000)
            print(f"2:2 healthy (settled: {settled}) {line}")
            assert 0.45 <= share <= 0.55, f"2:2 healthy should split 1:1 +-10 %: {line}"
