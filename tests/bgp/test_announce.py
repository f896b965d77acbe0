"""Routes from ExaBGPSpeaker reach FRR's kernel FIB via the node, and leave it."""

from __future__ import annotations

import ipaddress
import time

import pytest

from bgplb.model import PeerState, Route
from tests.harness.frr import BgpLab, wait_until

from .conftest import SpeakerFactory

pytestmark = pytest.mark.bgp

VIP = ipaddress.ip_network("10.99.0.1/32")


async def test_announce_then_withdraw(bgp_lab_factory, speaker_factory: SpeakerFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory()
    speaker, _ = await speaker_factory(bl, 1)
    peer = bl.r1_v4(1)
    t0 = time.monotonic()
    await speaker.set_routes({peer: frozenset({Route(VIP, None)})})
    await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 15)
    print(f"cold start -> FIB: {time.monotonic() - t0:.3f}s")
    assert speaker.peers()[peer].state is PeerState.UP
    assert speaker.advertised() == {peer: frozenset({Route(VIP, None)})}
    took = None
    await speaker.set_routes({peer: frozenset()})
    took = await wait_until(lambda: bl.router.fib(str(VIP)) == [], 5)
    print(f"withdraw -> FIB: {took * 1000:.0f} ms")
    assert speaker.commands_sent >= 2
    assert speaker.commands_failed == 0


async def test_v6_vip_over_v6_session(bgp_lab_factory, speaker_factory: SpeakerFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    speaker, _ = await speaker_factory(bl, 1, v6=True)
    vip6 = ipaddress.ip_network("fd00:99::1/128")
    await speaker.set_routes({bl.r1_v6(1): frozenset({Route(vip6, None)})})
    await wait_until(lambda: bl.router.fib(str(vip6)) == [bl.lb_v6(1)], 15)
    await speaker.set_routes({bl.r1_v6(1): frozenset()})
    await wait_until(lambda: bl.router.fib(str(vip6)) == [], 5)
    assert speaker.commands_failed == 0


async def test_v6_vip_over_v4_session_explicit_next_hop(
    bgp_lab_factory, speaker_factory: SpeakerFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    speaker, _ = await speaker_factory(bl, 1)
    vip6 = ipaddress.ip_network("fd00:99::2/128")
    route = Route(vip6, ipaddress.ip_address(bl.lb_v6(1)))
    await speaker.set_routes({bl.r1_v4(1): frozenset({route, Route(VIP, None)})})
    await wait_until(lambda: bl.router.fib(str(vip6)) == [bl.lb_v6(1)], 15)
    assert bl.router.fib(str(VIP)) == [bl.lb_v4(1)]
    await speaker.set_routes({bl.r1_v4(1): frozenset({Route(VIP, None)})})
    await wait_until(lambda: bl.router.fib(str(vip6)) == [], 5)
    assert bl.router.fib(str(VIP)) == [bl.lb_v4(1)]
    assert speaker.commands_failed == 0


async def test_thousand_routes_pipelined(bgp_lab_factory, speaker_factory: SpeakerFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    speaker, _ = await speaker_factory(bl, 1)
    peer = bl.r1_v4(1)
    await wait_until(lambda: speaker.peers()[peer].state is PeerState.UP, 15)
    routes = frozenset(
        Route(ipaddress.ip_network(f"10.99.{i // 250}.{i % 250 + 1}/32"), None) for i in range(1000)
    )
    t0 = time.monotonic()
    await speaker.set_routes({peer: routes})
    written = time.monotonic() - t0
    took = await wait_until(lambda: bl.router.fib_count() == 1000, 10, interval=0.02)
    print(
        f"1000 routes: written in {written * 1000:.0f} ms, "
        f"in FIB after {time.monotonic() - t0:.2f}s"
    )
    assert took < 10
    t0 = time.monotonic()
    await speaker.set_routes({peer: frozenset()})
    await wait_until(lambda: bl.router.fib_count() == 0, 10, interval=0.02)
    print(f"1000 withdrawn from FIB after {time.monotonic() - t0:.2f}s")
    assert speaker.commands_failed == 0
    assert speaker.commands_sent >= 2000
