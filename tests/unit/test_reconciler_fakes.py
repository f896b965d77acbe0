"""The fakes behave like the kernel and the speaker where the reconciler tests rely on it."""

from __future__ import annotations

import pytest

from bgplb.bgp.base import SpeakerError
from bgplb.bgp.fake import FakeSpeaker
from bgplb.clock import FakeClock
from bgplb.dataplane.base import DataplaneError
from bgplb.dataplane.fake import FakeDataplane
from bgplb.eventlog import EventLog
from bgplb.model import (
    AddAddress,
    AddRealServer,
    AddressSpec,
    AddVirtualService,
    EnsureLink,
    LinkSpec,
    PeerState,
    Protocol,
    RealServerKey,
    RealServerSpec,
    RemoveAddress,
    RemoveLink,
    RemoveVirtualService,
    Route,
    VirtualServiceKey,
    VirtualServiceSpec,
)

from .fixtures import EBGP_PEER, config, ip, ipvs_service, net

VIP = ip("10.99.0.1")
KEY = VirtualServiceKey(VIP, 80, Protocol.TCP)
RS = RealServerSpec(RealServerKey(KEY, ip("10.0.0.10"), 80))


async def built(dp: FakeDataplane) -> None:
    for action in (
        EnsureLink(LinkSpec("web")),
        AddAddress(AddressSpec("web", VIP)),
        AddVirtualService(VirtualServiceSpec(KEY)),
        AddRealServer(RS),
    ):
        await dp.apply(action)


async def test_dataplane_records_and_mutates() -> None:
    log = EventLog(clock=FakeClock())
    dp = FakeDataplane(log)
    await built(dp)
    assert [e.kind for e in log.of("dataplane")] == [
        "EnsureLink",
        "AddAddress",
        "AddVirtualService",
        "AddRealServer",
    ]
    observed = await dp.observe()
    assert observed.owned.real_servers == {RS}
    assert "web" in observed.interfaces
    assert "lo" in observed.foreign_links  # system links are not ours


async def test_kernel_like_cascades_and_dependencies() -> None:
    dp = FakeDataplane(EventLog())
    await built(dp)
    await dp.apply(RemoveVirtualService(KEY))
    assert dp.owned().real_servers == frozenset()
    await dp.apply(RemoveLink(LinkSpec("web")))
    assert dp.owned().addresses == frozenset()
    with pytest.raises(DataplaneError, match="no interface"):
        await dp.apply(AddAddress(AddressSpec("web", VIP)))
    with pytest.raises(DataplaneError, match=r"no tcp:10\.99\.0\.1:80"):
        await dp.apply(AddRealServer(RS))
    await dp.apply(RemoveAddress(AddressSpec("web", VIP)))  # idempotent


async def test_touching_a_foreign_object_is_a_violation() -> None:
    dp = FakeDataplane(EventLog())
    dp.add_foreign_link("web")
    dp.add_foreign_address(AddressSpec("lo", VIP))
    for action in (EnsureLink(LinkSpec("web")), RemoveAddress(AddressSpec("lo", VIP))):
        with pytest.raises(DataplaneError, match="someone else"):
            await dp.apply(action)
    assert len(dp.violations) == 2


async def test_fail_next_and_drift_hooks_wake() -> None:
    dp = FakeDataplane(EventLog())
    woken: list[str] = []
    await dp.start(lambda: woken.append("x"))
    await built(dp)
    dp.fail_next(AddAddress, times=2)
    for _ in range(2):
        with pytest.raises(DataplaneError, match="injected"):
            await dp.apply(AddAddress(AddressSpec("web", ip("10.99.0.2"))))
    await dp.apply(AddAddress(AddressSpec("web", ip("10.99.0.2"))))
    dp.delete_address(AddressSpec("web", VIP))
    dp.delete_service(KEY)
    assert woken == ["x", "x"]
    assert dp.owned().real_servers == frozenset()
    dp.restart()
    assert dp.owned().links == {LinkSpec("web")}  # the kernel keeps it


async def test_speaker_records_only_changes_and_hides_down_peers() -> None:
    log = EventLog()
    sp = FakeSpeaker(log)
    woken: list[int] = []
    await sp.start(config(ipvs_service()), lambda: woken.append(1))
    routes = {EBGP_PEER: frozenset({Route(net("10.99.0.1/32"), None)})}
    await sp.set_routes(routes)
    await sp.set_routes(dict(routes))
    await sp.set_routes({**routes, "10.0.0.9": frozenset()})  # an empty peer is no change
    assert len(log.of("speaker", "set_routes")) == 1
    assert sp.advertised() == routes
    sp.set_peer_state(EBGP_PEER, PeerState.DOWN)
    assert woken == [1]
    assert sp.advertised() == {}
    assert sp.peers()[EBGP_PEER].state is PeerState.DOWN
    sp.fail_set_routes = 1
    with pytest.raises(SpeakerError):
        await sp.set_routes({})
    await sp.stop()
    assert sp.wanted == {}
    with pytest.raises(SpeakerError, match="stopped"):
        await sp.set_routes(routes)
