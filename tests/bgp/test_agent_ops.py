"""The whole agent against FRR: reload without a flap, MD5 and its secret, /metrics."""

# Reading /proc inside an async test is short and local on purpose.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import base64
import re
import signal
import stat
from pathlib import Path

import pytest

from tests.harness.agent_proc import AgentFactory, peer, promtool_check, service
from tests.harness.frr import BgpLab, wait_until

pytestmark = pytest.mark.bgp

VIP = "10.99.0.1/32"
VIP6 = "fd00:99::1/128"


def _rib_peers(bl: BgpLab, prefix: str) -> set[str]:
    afi = "ipv6" if ":" in prefix else "ipv4"
    data = bl.router.vtysh_json(f"show bgp {afi} unicast {prefix} json")
    paths = data.get("paths", [])
    assert isinstance(paths, list)
    return {p["peer"]["peerId"] for p in paths if not p.get("removed")}


async def test_sighup_adds_a_peer_without_flapping_the_other(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    lb = bl.lb_v4(1)
    services = [service("web", ["10.99.0.1"], lb), service("web6", ["fd00:99::1"], lb)]
    agent, _ = agent_factory(bl, 1, peers=[peer(bl, 1, next_hop_v6=bl.lb_v6(1))], services=services)
    await wait_until(lambda: bl.router.fib(VIP) == [lb], 15)
    await wait_until(lambda: _rib_peers(bl, VIP6) == {lb}, 5)
    await asyncio.sleep(1.1)
    up_before = bl.router.peer_uptime_ms(lb)
    flaps_before = bl.router.peer_flaps(lb)
    adj_before = bl.router.log().count("ADJCHANGE")

    agent.config["peers"].append(peer(bl, 1, v6=True, next_hop_v4=lb))
    agent.write_config()
    agent.signal(signal.SIGHUP)
    took = await wait_until(lambda: _rib_peers(bl, VIP6) == {lb, bl.lb_v6(1)}, 10)
    print(f"SIGHUP: the new v6 peer has the route after {took * 1000:.0f} ms")
    await wait_until(lambda: bl.router.fib(VIP6) == [bl.lb_v6(1)], 5)
    await asyncio.sleep(1.0)
    assert bl.router.peer_flaps(lb) == flaps_before
    assert bl.router.peer_uptime_ms(lb) >= up_before + 1000
    adj = [x for x in bl.router.log().splitlines() if "ADJCHANGE" in x][adj_before:]
    assert all(f" {lb} " not in x and f"{lb}(" not in x for x in adj), adj
    assert _rib_peers(bl, VIP) == {lb}  # the old peer kept its route all along
    assert bl.router.fib(VIP) == [lb]
    reloaded = agent.events("config_reloaded")
    assert len(reloaded) == 1
    assert len(agent.exabgp_pids()) == 1  # reloaded in place, not restarted
    peers = {p["address"]: p["state"] for p in agent.status()["peers"]}
    assert peers == {bl.r1_v4(1): "up", bl.r1_v6(1): "up"}
    assert agent.errors() == []


async def test_md5_right_key_peers_wrong_key_never_and_says_why(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    secret = "Agent-Md5-Secret-4711"
    bl: BgpLab = bgp_lab_factory(n_lbs=2, password=secret)
    agents = []
    for n, key in ((1, secret), (2, "Wrong-Md5-Secret-0815")):
        agent, _ = agent_factory(bl, n, start=False)
        keyfile = agent.workdir / "md5"
        keyfile.write_text(key + "\n")
        keyfile.chmod(0o600)
        agent.config["peers"] = [peer(bl, n, md5_password_file=str(keyfile))]
        agent.start()
        agents.append(agent)
    good, bad = agents
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], 15)
    await asyncio.sleep(3.5)  # the wrong key's SYNs are dropped: it never gets anywhere
    assert bl.router.fib(VIP) == [bl.lb_v4(1)]
    assert bl.router.peer_flaps(bl.lb_v4(2)) == (0, 0)
    status = bad.status()["peers"][0]
    print(f"wrong MD5 key: {status}")
    assert status["state"] != "up"
    assert "md5" in status["reason"].lower()
    assert good.status()["peers"][0]["state"] == "up"
    assert good.status()["peers"][0]["reason"] == ""
    b64 = base64.b64encode(secret.encode()).decode()
    for agent in agents:
        text = agent.log_text()
        assert "exabgp api connected" in text  # the log is there...
        assert secret not in text  # ...without the key, plain or as ExaBGP gets it
        assert b64 not in text
        for path in _files(agent.runtime_dir):
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, f"{path} is accessible to others ({mode:o})"
        for pid in agent.exabgp_pids():
            assert secret not in Path(f"/proc/{pid}/cmdline").read_text()
            assert secret not in Path(f"/proc/{pid}/environ").read_text(errors="replace")


def _files(root: Path) -> list[Path]:
    return [root, *root.rglob("*")]


async def test_metrics_of_the_running_agent(bgp_lab_factory, agent_factory: AgentFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    agent, _ = agent_factory(bl, 1)
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], 15)
    peer_addr = bl.r1_v4(1)

    def session_up() -> bool:
        pattern = rf'^bgplb_bgp_session_up\{{peer="{peer_addr}"\}} 1\.0$'
        return re.search(pattern, metrics(), re.M) is not None

    def metrics() -> str:
        return agent.get("/metrics")

    await wait_until(session_up, 5, interval=0.1)
    text = metrics()
    routes = re.search(
        rf'^bgplb_routes_advertised\{{(?=[^}}]*peer="{peer_addr}")(?=[^}}]*service="web")[^}}]*\}}'
        r" (\S+)$",
        text,
        re.M,
    )
    assert routes, text
    assert float(routes.group(1)) == 1.0
    assert promtool_check(text) == ""
    assert agent.errors() == []
