"""Per-peer advertisement (issue 14, item 2): the desired routes per peer, and a reload that
moves a service from one peer to another, on the whole agent with the fake speaker."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from bgplb.admin import AdminState
from bgplb.bgp import commands
from bgplb.model import Route, RouteSet
from bgplb.policy import desired_state
from bgplb.routeset import kept_routes

from .fixtures import config, ebgp_peer, ibgp_peer, ip, ipvs_service, net, node
from .test_agent import Harness, write

R1, R2, R6 = "10.0.0.1", "10.0.0.3", "2001:db8:ff::2"
PEERS = [ebgp_peer(R1, name="r1"), ebgp_peer(R2, name="r2"), ebgp_peer(R6, name="r6")]
WEB, API = ipaddress.IPv4Address("10.99.0.1"), ipaddress.IPv4Address("10.99.0.2")


def prefixes(routes: RouteSet) -> dict[str, set[str]]:
    return {peer: {str(r.prefix) for r in rs} for peer, rs in routes.items()}


def test_a_service_goes_only_to_its_peers_and_the_default_is_every_peer() -> None:
    cfg = config(
        ipvs_service("web", vips=("10.99.0.1", "2001:db8::1"), peers=["r1", "r6"]),
        ipvs_service("api", vips=("10.99.0.2",), peers=["r2"]),
        ipvs_service("all", vips=("10.99.0.3", "2001:db8::3")),
        peers=[*PEERS[:2], {**PEERS[2], "next_hop_v4": "10.0.0.99"}],
    )
    routes = desired_state(cfg, {}, AdminState(), 0.0).routes
    assert prefixes(routes) == {
        # a v4 session without next_hop_v6 carries no v6 VIP; the v6 session has next_hop_v4
        R1: {"10.99.0.1/32", "10.99.0.3/32"},
        R2: {"10.99.0.2/32", "10.99.0.3/32"},
        R6: {"10.99.0.1/32", "2001:db8::1/128", "10.99.0.3/32", "2001:db8::3/128"},
    }
    assert Route(net("10.99.0.3/32"), ip("10.0.0.99"), service="all") in routes[R6]


def test_a_service_listing_an_ibgp_and_an_ebgp_peer_skips_the_third() -> None:
    """Peers of both types may be listed; the unlisted peer gets nothing."""
    cfg = config(
        ipvs_service("web", peers=["rr", "r1"]),
        peers=[ebgp_peer(R1, name="r1"), ibgp_peer(name="rr"), ebgp_peer(R2, name="r2")],
    )
    routes = desired_state(cfg, {}, AdminState(), 0.0).routes
    assert set(routes) == {R1, "10.0.0.2"}


def test_kept_routes_judges_each_peer_by_its_own_wanted_set() -> None:
    """The early withdraw of every pass keeps the advertised routes each peer still wants.
    Its filter once judged every peer's routes as the last peer's: with per-peer sets that
    withdrew web from r1 (r2 does not want it) and re-announced it at the end of each pass."""
    web, api = Route(net("10.99.0.1/32"), None), Route(net("10.99.0.2/32"), None)
    advertised: RouteSet = {R1: frozenset({web, api}), R2: frozenset({api})}
    wanted = {R1: {web.prefix, api.prefix}, R2: {api.prefix}}
    kept = kept_routes(advertised, lambda peer, prefix: prefix in wanted.get(peer, set()))
    assert kept == advertised
    assert kept_routes(advertised, lambda peer, prefix: peer == R2) == {R2: frozenset({api})}


# --------------------------------------------------------------------------- reload


def raw(tmp_path: Path, web_peers: list[str]) -> dict[str, Any]:
    return {
        "node": node(state_dir=str(tmp_path / "state"), resync_interval=2.0),
        "peers": [ebgp_peer(R1, name="r1"), ebgp_peer(R2, name="r2")],
        "services": [
            ipvs_service("web", vips=(str(WEB),), ports=(80,), peers=web_peers),
            ipvs_service("api", vips=(str(API),), ports=(443,)),
        ],
    }


def sent(before: RouteSet, after: RouteSet) -> list[tuple[str, str, str]]:
    """What the real speaker sends to go from ``before`` to ``after`` (commands.diff):
    (peer, "withdraw"/"announce", prefix)."""
    out = []
    for peer, d in commands.diff(before, after, [R1, R2]).items():
        out += [(peer, "withdraw", str(r.prefix)) for r in d.withdraw]
        out += [(peer, "announce", str(r.prefix)) for r in d.announce]
    return out


async def test_a_reload_moving_a_service_withdraws_from_one_announces_to_the_other(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, raw(tmp_path, ["r1"]))
    await h.start()
    await h.until(lambda: h.announced(R1) == {WEB, API} and h.announced(R2) == {API})
    settled = len(h.log.events)
    await h.clock.advance(10.0)  # five periodic passes: the sets stay as they are
    assert not [e.detail for e in h.log.events[settled:] if e.kind == "set_routes"]
    web = h.agent.status().service("web")
    assert web is not None
    assert (web.peers, list(web.routes)) == ([R1], [R1])
    names = {p.address: p.name for p in h.agent.status().peers}
    assert names == {R1: "r1", R2: "r2"}

    before = dict(h.speaker.wanted)
    write(h.path, raw(tmp_path, ["r2"]))
    mark = len(h.log.events)
    result = await h.agent.reload()
    assert result.ok, result.errors
    assert result.changed_services == ["web"]
    await h.until(lambda: h.announced(R1) == {API} and h.announced(R2) == {WEB, API})
    await h.clock.advance(10.0)  # five periodic passes: nothing else is sent
    changes = [e.detail for e in h.log.events[mark:] if e.kind == "set_routes"]
    # what the speaker sent, step by step (the pass withdraws early, then announces)
    commands_sent, held = [], before
    for change in changes:
        commands_sent += sent(held, change)
        held = change
    assert commands_sent == [(R1, "withdraw", "10.99.0.1/32"), (R2, "announce", "10.99.0.1/32")]
    # api's routes are the very same in every set sent: never withdrawn nor re-sent
    api = {p: {r for r in rs if r.service == "api"} for p, rs in before.items()}
    for change in changes:
        assert api == {p: {r for r in rs if r.service == "api"} for p, rs in change.items()}
    assert not [e for e in h.log.events[mark:] if e.kind in ("reconfigure", "restart")]
    web = h.agent.status().service("web")
    assert web is not None
    assert (web.peers, list(web.routes)) == ([R2], [R2])
    await h.stop()


async def test_a_reload_naming_an_unknown_peer_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, raw(tmp_path, ["r1"]))
    await h.start()
    await h.until(lambda: h.announced(R1) == {WEB, API})
    before = h.agent.config
    write(h.path, raw(tmp_path, ["r3"]))
    mark = len(h.log.events)
    result = await h.agent.reload()
    assert not result.ok
    assert result.errors == ["services[0].peers[0]: unknown peer 'r3' (peer names: 'r1', 'r2')"]
    assert h.agent.config is before
    await h.clock.advance(2.0)
    assert not [e for e in h.log.events[mark:] if e.kind == "set_routes"]
    assert h.announced(R1) == {WEB, API}
    await h.stop()
