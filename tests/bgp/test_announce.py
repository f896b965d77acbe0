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
