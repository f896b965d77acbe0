"""The agent SIGKILLed at 20 random points during a pass, a reload and a drain, then restarted:
the final state equals the desired one (the router has exactly the healthy, undrained VIPs of
the config file in force), no orphan kernel object (a VIP on lo that no service wants), no
orphan route, no orphan process. One lab for all 20; the seed is printed (FAULT_SEED=N replays).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from typing import Any

import pytest

from tests.harness.agent_proc import AgentFactory, AgentProc, service
from tests.harness.figures import count
from tests.harness.frr import BgpLab, pid_alive, wait_until
from tests.harness.netns import ns_pids, run

from .common import CONVERGE, START_TIMEOUT, Api

pytestmark = pytest.mark.faults

KILLS = 20
SEED = int(os.environ.get("FAULT_SEED", "1313"))
HEALTHY = {"web": "10.99.0.1", "api": "10.99.0.2", "extra": "10.99.0.4"}
DEAD = {"dead": "10.99.0.3"}  # its check never passes: never announced


def _services(bl: BgpLab, with_extra: bool) -> list[dict[str, Any]]:
    lb = bl.lb_v4(1)
    out = [service(name, [vip], lb) for name, vip in HEALTHY.items() if name != "extra"]
    dead = service("dead", [DEAD["dead"]], lb, check="tcp")
    dead["checks"][0]["port"] = 8081  # nothing listens there
    out.append(dead)
    if with_extra:
        out.append(service("extra", [HEALTHY["extra"]], lb))
    return out


def _desired(agent: AgentProc) -> set[str]:
    """The VIPs that should be at the router: healthy services of the file in force, minus
    the drains persisted in state_dir (what a restarted agent loads)."""
    names = {s["name"] for s in agent.config["services"]}
    drained: set[str] = set()
    path = agent.workdir / "state" / "admin.json"
    if path.exists():
        doc = json.loads(path.read_text())
        if doc.get("node_drained"):
            return set()
        drained = set(doc.get("drained", []))
    return {f"{vip}/32" for name, vip in HEALTHY.items() if name in names - drained}


def _router_vips(bl: BgpLab) -> set[str]:
    out = json.loads(run("ip", "-4", "-n", bl.router.ns, "-j", "route", "show", "proto", "bgp"))
    return {r["dst"] if "/" in r["dst"] else f"{r['dst']}/32" for r in out}


def _lo_vips(agent: AgentProc) -> set[str]:
    out = json.loads(run("ip", "-4", "-n", agent.ns, "-j", "addr", "show", "dev", "lo"))
    return {
        f"{a['local']}/{a['prefixlen']}"
        for link in out
        for a in link.get("addr_info", [])
        if a["local"].startswith("10.99.")
    }


def _configured_vips(agent: AgentProc) -> set[str]:
    return {f"{v}/32" for s in agent.config["services"] for v in s["vips"]}


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return ""


async def _converged(bl: BgpLab, agent: AgentProc, backend_pid: int | None) -> float:
    want = _desired(agent)
    took = await wait_until(lambda: _router_vips(bl) == want, CONVERGE, interval=0.05)
    # no orphan address: every 10.99 address on lo belongs to a configured service, and
    # every announced VIP is there
    lo = _lo_vips(agent)
    assert lo <= _configured_vips(agent), (lo, _configured_vips(agent))
    assert want <= lo, (want, lo)
    # no orphan process: the agent and one ExaBGP with its API relay child (plus the backend)
    exabgp = [p for p in agent.exabgp_pids() if pid_alive(p)]
    assert len(exabgp) == 1, exabgp
    live = {p for p in ns_pids(agent.ns) if pid_alive(p)}
    others = live - {agent.pid, backend_pid, *exabgp}
    others = {p for p in others if _ppid(p) not in exabgp}
    assert not others, [(p, _cmdline(p)) for p in others]
    return took


async def _kill_at(agent: AgentProc, delay: float) -> None:
    await asyncio.sleep(delay)
    agent.kill()
    # ExaBGP dies with the agent (PDEATHSIG): nothing keeps announcing
    await wait_until(lambda: not any(pid_alive(p) for p in agent.exabgp_pids()), 10, 0.02)


async def test_agent_sigkill_at_random_points_converges_to_desired(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    rng = random.Random(SEED)
    print(f"FAULT_SEED={SEED}")
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    agent, backend = agent_factory(bl, 1, services=_services(bl, False), start=False)
    agent.config["node"]["drain_delay"] = 0
    agent.log_level = "info"
    agent.start_timeout = START_TIMEOUT
    backend_pid = backend.proc.pid if backend.proc else None
    agent.start()
    await _converged(bl, agent, backend_pid)
    done: list[str] = []
    t0 = time.monotonic()
    count("faults_injected", KILLS)
    for i in range(KILLS):
        phase = rng.choice(["pass", "reload", "drain"])
        delay = rng.uniform(0.0, 0.6 if phase != "pass" else 1.5)
        if phase == "pass":  # the start-up passes: kill while the agent comes up
            agent.kill()
            agent.start()
            await _kill_at(agent, delay)
        elif phase == "reload":  # add or remove `extra`, SIGHUP, kill during the reload
            with_extra = not any(s["name"] == "extra" for s in agent.config["services"])
            agent.config["services"] = _services(bl, with_extra)
            agent.write_config()
            agent.signal(signal.SIGHUP)
            await _kill_at(agent, delay)
        else:  # drain or undrain `api` over the API, kill while it is applied
            drained = "10.99.0.2/32" not in _desired(agent)
            action = "undrain" if drained else "drain"
            api = Api(agent.ns, timeout=5)
            call = asyncio.create_task(
                asyncio.to_thread(api.request, "POST", f"/api/v1/services/api/{action}")
            )
            await _kill_at(agent, delay)
            try:
                await call  # answered, or cut off by the kill: either is fine
            except Exception as e:
                print(f"  {action} cut off: {e!r}")
            finally:
                api.close()
        started = time.monotonic()
        agent.start()
        up = time.monotonic() - started
        took = await _converged(bl, agent, backend_pid)
        done.append(f"{phase}@{delay:.2f}")
        print(
            f"kill {i + 1}/{KILLS}: {phase} +{delay:.2f}s -> restarted (API up in {up:.1f}s), "
            f"router has {sorted(_router_vips(bl))} {took:.2f}s later"
        )
    print(f"{KILLS} kills in {time.monotonic() - t0:.0f}s: {done}")
    assert agent.runs == 1 + KILLS + sum(d.startswith("pass") for d in done)
    assert agent.running()
