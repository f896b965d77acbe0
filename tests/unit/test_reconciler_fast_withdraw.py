"""The fast withdraw: a check going down withdraws at once, even while a pass is running."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest

from bgplb.admin import AdminState
from bgplb.model import ObservedDataplane, RouteSet
from bgplb.policy import prefixes_given_up, vip_owners

from .fixtures import (
    API_VIP,
    EBGP_PEER,
    WEB_VIP,
    Rig,
    announce_service,
    config,
    down,
    ipvs_service,
    key,
    net,
    tcp_check,
    up,
    web_and_api,
)


@pytest.fixture
async def rig(tmp_path: Path) -> Rig:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    await r.start()
    assert r.announced() == {WEB_VIP, API_VIP}
    return r


def _block_observe(rig: Rig) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the next dataplane dump wait: (entered, release)."""
    entered, release = asyncio.Event(), asyncio.Event()
    real = rig.dp.observe

    async def slow() -> ObservedDataplane:
        entered.set()
        await release.wait()
        return await real()

    rig.dp.observe = slow  # type: ignore[method-assign]
    return entered, release


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_withdraws_while_a_pass_is_stuck_and_the_pass_does_not_reannounce(
    rig: Rig,
) -> None:
    entered, release = _block_observe(rig)
    passing = asyncio.ensure_future(rig.rec.reconcile_once())  # web still up for this pass
    await entered.wait()
    rig.health.set(key("web", "tcp"), down())
    rig.rec.check_went_down("web")
    await _settle()
    assert rig.announced() == {API_VIP}  # withdrawn with the pass still stuck in observe
    assert not passing.done()
    release.set()
    await passing  # decided on the old health: must not put web back
    assert rig.announced() == {API_VIP}
    await rig.rec.reconcile_once()
    assert rig.announced() == {API_VIP}


async def test_nothing_is_withdrawn_while_the_service_still_announces(rig: Rig) -> None:
    rig.log.clear()
    rig.rec.check_went_down("web")  # a stale call: health still says up
    await _settle()
    assert rig.speaker_sets() == []
    assert rig.announced() == {WEB_VIP, API_VIP}


async def test_no_fast_withdraw_after_shutdown_began(rig: Rig) -> None:
    await rig.rec.shutdown(grace=0.0, keep_dataplane=True)
    rig.log.clear()
    rig.health.set(key("web", "tcp"), down())
    rig.rec.check_went_down("web")
    await _settle()
    assert rig.speaker_sets() == []


def test_prefixes_given_up_keeps_a_vip_another_announcing_service_shares() -> None:
    cfg = config(
        announce_service("a", vips=["10.99.1.1", "10.99.1.2"], checks=[tcp_check("c", port=1)]),
        announce_service("b", vips=["10.99.1.2"], checks=[tcp_check("c", port=2)]),
    )
    health = {key("a", "c"): down(), key("b", "c"): up()}
    gone = prefixes_given_up(cfg, "a", health, AdminState(), 0.0)
    assert gone == {net("10.99.1.1/32")}
    health[key("b", "c")] = down()
    assert prefixes_given_up(cfg, "a", health, AdminState(), 0.0) == {
        net("10.99.1.1/32"),
        net("10.99.1.2/32"),
    }
    health[key("a", "c")] = up()
    assert prefixes_given_up(cfg, "a", health, AdminState(), 0.0) == frozenset()
    assert prefixes_given_up(cfg, "nope", health, AdminState(), 0.0) == frozenset()


def test_prefixes_given_up_with_the_vip_index_of_the_config() -> None:
    """The reconciler passes ``vip_owners(config)``, made once per config: same answers."""
    cfg = config(
        announce_service("a", vips=["10.99.1.1", "10.99.1.2"], checks=[tcp_check("c", port=1)]),
        announce_service("b", vips=["10.99.1.2"], checks=[tcp_check("c", port=2)]),
        announce_service("c", vips=["10.99.1.3"], checks=[tcp_check("c", port=3)]),
    )
    owners = vip_owners(cfg)
    assert [s.name for s in owners[ipaddress.ip_address("10.99.1.2")]] == ["a", "b"]
    health = {key("a", "c"): down(), key("b", "c"): up(), key("c", "c"): down()}
    for name in ("a", "b", "c"):
        expected = prefixes_given_up(cfg, name, health, AdminState(), 0.0)
        assert prefixes_given_up(cfg, name, health, AdminState(), 0.0, owners) == expected
    assert prefixes_given_up(cfg, "a", health, AdminState(), 0.0, owners) == {net("10.99.1.1/32")}
    assert prefixes_given_up(cfg, "c", health, AdminState(), 0.0, owners) == {net("10.99.1.3/32")}


def test_prefixes_given_up_keeps_a_degraded_service() -> None:
    cfg = config(
        announce_service(
            "a", vips=["10.99.1.1"], checks=[tcp_check("c", port=1)], on_down="announce_degraded"
        )
    )
    health = {key("a", "c"): down()}
    assert prefixes_given_up(cfg, "a", health, AdminState(), 0.0) == frozenset()


async def test_a_pass_waiting_on_the_speaker_never_undoes_a_fast_withdraw(
    tmp_path: Path,
) -> None:
    """The pass's early withdraw reads what is advertised under the speaker lock: computed
    while a fast withdraw still held the lock, it would put web back."""
    cfg = config(
        ipvs_service("web", vips=(WEB_VIP,), checks=[tcp_check()]),
        ipvs_service("api", vips=(API_VIP,), ports=(443,), checks=[tcp_check()]),
    )
    rig = Rig(cfg, tmp_path)
    rig.health.set(key("web", "tcp"), up())
    rig.health.set(key("api", "tcp"), up())
    await rig.start()
    entered, release = asyncio.Event(), asyncio.Event()
    real = rig.sp.set_routes

    async def slow(routes: RouteSet) -> None:
        entered.set()
        await release.wait()
        await real(routes)

    rig.log.clear()
    rig.sp.set_routes = slow  # type: ignore[method-assign]
    rig.health.set(key("web", "tcp"), down())
    rig.rec.check_went_down("web")
    await entered.wait()  # the fast withdraw holds the speaker lock, web not gone yet
    rig.sp.set_routes = real  # type: ignore[method-assign]
    rig.health.set(key("web", "tcp"), up())  # the pass decides on "web up, api down"
    rig.health.set(key("api", "tcp"), down())
    passing = asyncio.ensure_future(rig.rec.reconcile_once())
    await _settle()
    release.set()
    await passing
    sets = [
        {str(r.prefix.network_address) for r in e.detail.get(EBGP_PEER, ())}
        for e in rig.speaker_sets()
    ]
    # the fast withdraw; the pass's early withdraw narrows *that* (api goes too, web is not
    # put back: before the fix it sent {web} here); then its announce, on the health of now
    assert sets == [{API_VIP}, set(), {WEB_VIP}]
