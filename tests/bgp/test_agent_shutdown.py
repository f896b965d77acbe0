"""The real agent process: a second SIGTERM during the shutdown grace ends the grace at once,
and the usual teardown follows (ExaBGP stopped, the VIP removed, exit 0)."""

# Blocking process/file calls inside async tests are short and local on purpose.

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.harness.agent_proc import AgentFactory
from tests.harness.frr import BgpLab, pid_alive, wait_until
from tests.harness.netns import run

pytestmark = pytest.mark.bgp

VIP = "10.99.0.1/32"
GRACE = 120.0  # an exit well before it can only come from the second SIGTERM


async def test_a_second_sigterm_ends_the_shutdown_grace(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    agent, _ = agent_factory(bl, 1, shutdown_grace=GRACE)
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], 15)
    t0 = time.time()
    agent.signal(signal.SIGTERM)
    await wait_until(lambda: bl.router.fib(VIP) == [], 5, interval=0.01)
    await wait_until(lambda: bool(agent.events("agent_stopping")), 5)
    await asyncio.sleep(1.0)
    assert agent.running(), "the agent left before its grace"
    second = time.time()
    agent.signal(signal.SIGTERM)
    code = await asyncio.to_thread(agent.wait, GRACE / 2)
    took = time.time() - second
    print(
        f"second SIGTERM {second - t0:.1f} s into a {GRACE:g} s grace: "
        f"the agent exited {took:.2f} s later"
    )
    assert code == 0
    assert took < 30.0  # ~2 s idle, 5.4 s at load 11 on 2 vCPUs (stopping ExaBGP)
    events = [x.get("event") for x in agent.log_lines()]
    assert "shutdown_grace_ended" in events
    assert events.index("shutdown_grace_ended") < events.index("agent_stopped")
    assert agent.errors() == []
    exabgp = agent.exabgp_pids()
    assert exabgp
    assert not pid_alive(exabgp[-1])
    assert "10.99.0.1" not in run("ip", "-n", agent.ns, "addr", "show", "dev", "lo")
