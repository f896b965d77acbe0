"""Drain attributes as FRR sees them: the node leaves the multipath set before the withdraw."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from bgplb.model import Route, RouteAttributes
from tests.harness.frr import BgpLab, wait_until

from .conftest import SpeakerFactory

pytestmark = pytest.mark.bgp

VIP = ipaddress.ip_network("10.99.0.1/32")


def paths(bl: BgpLab) -> dict[str, dict[str, Any]]:
    """FRR's RIB paths for VIP, by the announcing peer."""
    data = bl.router.vtysh_json(f"show bgp ipv4 unicast {VIP} json")
    out: dict[str, dict[str, Any]] = {}
    for p in data.get("paths", []):  # type: ignore[union-attr]
        out[p["peer"]["peerId"]] = p
    return out


async def _two_nodes(bl: BgpLab, speaker_factory: SpeakerFactory) -> list[Any]:
    speakers = []
    for n in (1, 2):
        speaker, _ = await speaker_factory(bl, n)
        await speaker.set_routes({bl.r1_v4(n): frozenset({Route(VIP, None)})})
        speakers.append(speaker)
    await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1), bl.lb_v4(2)], 15)
    return speakers


async def test_drain_over_ebgp(bgp_lab_factory, speaker_factory: SpeakerFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=2)
    speakers = await _two_nodes(bl, speaker_factory)
    drain = RouteAttributes(communities=("65535:0",), as_path=(bl.lb_as,) * 3)
    await speakers[1].set_routes({bl.r1_v4(2): frozenset({Route(VIP, None, drain)})})
    took = await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 5)
    print(f"eBGP drain -> node out of the FIB: {took * 1000:.0f} ms")
    rib = paths(bl)
    drained = rib[bl.lb_v4(2)]
    assert drained["aspath"]["string"] == f"{bl.lb_as} {bl.lb_as} {bl.lb_as}"
    assert "graceful-shutdown" in drained["community"]["string"]
    assert not drained.get("multipath")
    assert not drained.get("bestpath")
    assert drained["valid"] is True  # still announced: traffic can still reach it
    await speakers[1].set_routes({bl.r1_v4(2): frozenset()})
    await wait_until(lambda: bl.lb_v4(2) not in paths(bl), 5)
    assert bl.router.fib(str(VIP)) == [bl.lb_v4(1)]


async def test_drain_over_ibgp(bgp_lab_factory, speaker_factory: SpeakerFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=2, ibgp=True)
    speakers = await _two_nodes(bl, speaker_factory)
    assert paths(bl)[bl.lb_v4(1)]["locPrf"] == 100
    drain = RouteAttributes(communities=("65535:0",), local_pref=0)
    await speakers[1].set_routes({bl.r1_v4(2): frozenset({Route(VIP, None, drain)})})
    took = await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 5)
    print(f"iBGP drain -> node out of the FIB: {took * 1000:.0f} ms")
    drained = paths(bl)[bl.lb_v4(2)]
    assert drained["locPrf"] == 0
    assert "graceful-shutdown" in drained["community"]["string"]
    assert drained["valid"] is True  # kept (an iBGP path is not a loop), just not best
    assert not drained.get("multipath")
    assert not drained.get("bestpath")
    await speakers[1].set_routes({bl.r1_v4(2): frozenset()})
    await wait_until(lambda: bl.lb_v4(2) not in paths(bl), 5)
    assert bl.router.fib(str(VIP)) == [bl.lb_v4(1)]
