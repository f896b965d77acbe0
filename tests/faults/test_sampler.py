"""The route sampler itself: a flap shorter than its poll interval still shows (netlink events),
and a steady route reports clean. Without this the "never withdrawn" cases could pass blind."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from tests.harness.frr import BgpLab
from tests.harness.netns import run
from tests.harness.route_sampler import RouteSampler, assert_never_withdrawn

pytestmark = pytest.mark.faults

PREFIX = "10.99.0.9/32"


async def test_a_sub_poll_flap_is_caught_and_a_steady_route_is_clean(
    bgp_lab_factory: Any,
) -> None:
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    ns, via = bl.router.ns, bl.lb_v4(1)
    route = f"{PREFIX} via {via} proto bgp"
    run("ip", "-n", ns, "route", "add", *route.split())
    sampler = RouteSampler(bl.router, PREFIX, via, interval=0.5)  # a slow poll on purpose
    sampler.start()
    await asyncio.sleep(0.3)
    steady = sampler.stop()
    print(f"steady: {steady.summary()}")
    assert_never_withdrawn(steady)
    assert steady.polls >= 1

    sampler = RouteSampler(bl.router, PREFIX, via, interval=0.5)
    sampler.start()
    await asyncio.sleep(0.2)
    # delete and re-add in one `ip -batch`: well under a millisecond, between two polls
    subprocess.run(  # noqa: ASYNC221  (one short ip call; timing matters, not the loop)
        ["ip", "-n", ns, "-batch", "-"],
        input=f"route del {route}\nroute add {route}\n",
        text=True,
        check=True,
        timeout=10,
    )
    await asyncio.sleep(0.3)
    flap = sampler.stop()
    print(f"flap: {flap.summary()}")
    # the poll (every 0.5 s) almost surely missed it; the events cannot
    assert [e.kind for e in flap.route_events] == ["del", "add"]
    assert flap.route_events[0].nexthops == (via,)
    with pytest.raises(AssertionError, match="1 kernel route delete"):
        assert_never_withdrawn(flap)
