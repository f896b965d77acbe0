"""Route -> ExaBGP API command text, and the per-peer diff."""

from __future__ import annotations

import ipaddress
import random

import pytest

from bgplb.bgp import commands, events
from bgplb.model import PeerState, Route, RouteAttributes

V4 = ipaddress.ip_network("10.99.0.1/32")
V6 = ipaddress.ip_network("fd00:99::1/128")


def test_announce_all_attributes() -> None:
    a = RouteAttributes(
        communities=("65535:0", "no-export"),
        large_communities=("65001:1:2",),
        extended_communities=("bandwidth:65001:125000000",),
        as_path=(65001, 65001, 65001),
        med=200,
        local_pref=0,
    )
    assert commands.announce("10.0.1.1", Route(V4, None, a)) == (
        "neighbor 10.0.1.1 announce route 10.99.0.1/32 next-hop self as-path [65001 65001 65001]"
        " community [65535:0 no-export] large-community [65001:1:2]"
        " extended-community [bandwidth:65001:125000000] med 200 local-preference 0"
    )


def test_plain_and_v6_next_hop() -> None:
    assert (
        commands.announce("10.0.1.1", Route(V4, None))
        == "neighbor 10.0.1.1 announce route 10.99.0.1/32 next-hop self"
    )
    r6 = Route(V6, ipaddress.ip_address("fd00:1::2"))
    assert (
        commands.withdraw("10.0.1.1", r6)
        == "neighbor 10.0.1.1 withdraw route fd00:99::1/128 next-hop fd00:1::2"
    )


@pytest.mark.parametrize("bad", ["1:1]\nannounce route 0.0.0.0/0", "1:1 2:2", "", "[x]", "a;b"])
def test_injection_refused(bad: str) -> None:
    with pytest.raises(commands.CommandError):
        commands.announce("10.0.1.1", Route(V4, None, RouteAttributes(communities=(bad,))))


def test_diff_by_prefix() -> None:
    plain, drained = Route(V4, None), Route(V4, None, RouteAttributes(med=5))
    r6 = Route(V6, ipaddress.ip_address("fd00:1::2"))
    d = commands.diff_peer({plain, r6}, {drained})
    assert d.withdraw == (r6,)
    assert d.announce == (drained,)  # a changed route is re-announced, never withdrawn
    assert not commands.diff_peer({plain}, {plain})
    assert commands.diff({"a": frozenset({plain})}, {"b": frozenset({plain})}, ["a", "b"]) == {
        "a": commands.PeerDiff(withdraw=(plain,), announce=()),
        "b": commands.PeerDiff(withdraw=(), announce=(plain,)),
    }


def test_unique_keeps_one_route_per_prefix_across_families() -> None:
    a, b = Route(V4, None), Route(V4, ipaddress.ip_address("10.0.1.2"))
    out = commands.unique({"p": {a, b, Route(V6, None)}})
    assert len(out["p"]) == 2


def test_a_duplicate_prefix_resolves_the_same_way_whatever_the_order() -> None:
    """Two services sharing a VIP with different attributes: the first route in
    ``route_key`` order is the one held, however the routes arrive."""
    routes = [Route(V4, None, RouteAttributes(med=m)) for m in (7, 3, 5)]
    first = min(routes, key=commands.route_key)
    for order in (routes, routes[::-1], routes[1:] + routes[:1]):
        assert commands.by_prefix(order) == {V4: first}
        assert commands.unique({"p": order}) == {"p": frozenset({first})}


def test_events() -> None:
    assert events.parse_line("done\n") == events.Ack(ok=True)
    assert events.parse_line("error") == events.Ack(ok=False)
    up = (
        '{ "exabgp": "5.0.0", "time": 1.5, "host" : "vm", "pid" : 1, "ppid" : 1, "counter": 1,'
        ' "type": "state", "neighbor": {'
        ' "address": { "local": "fd00:1:0::2", "peer": "fd00:1:0::1" },'
        ' "asn": { "local": 65001, "peer": 65000 }, "router-id": "10.0.1.2", "state": "up" } }'
    )
    assert events.parse_line(up) == events.StateEvent("fd00:1::1", PeerState.UP)
    down = up.replace('"up"', '"down", "reason": "notification received (6,10)"')
    assert events.parse_line(down) == events.StateEvent(
        "fd00:1::1", PeerState.DOWN, "notification received (6,10)"
    )
    assert isinstance(events.parse_line("reload in progress"), events.Other)
    assert isinstance(events.parse_line('{"type": "notification"}'), events.Other)
    assert isinstance(events.parse_line("{broken"), events.Other)
    assert isinstance(events.parse_line(up.replace('"up"', '"weird"')), events.Other)


def test_diff_matches_a_per_prefix_comparison_on_random_sets() -> None:
    """The set-difference diff equals the plain definition: withdraw the prefixes gone,
    announce every route that is new or differs from the one sent for its prefix."""
    rng = random.Random(7)
    pool = [
        Route(ipaddress.ip_network(f"10.99.0.{i}/32"), None, RouteAttributes(med=m))
        for i in range(1, 30)
        for m in (None, 5)
    ]
    for _ in range(200):
        sent = commands.unique({"p": rng.sample(pool, rng.randint(0, 25))})["p"]
        wanted = commands.unique({"p": rng.sample(pool, rng.randint(0, 25))})["p"]
        old = {r.prefix: r for r in sent}
        new = {r.prefix: r for r in wanted}
        d = commands.diff_peer(sent, wanted)
        assert d.withdraw == tuple(commands.ordered(r for p, r in old.items() if p not in new))
        assert d.announce == tuple(commands.ordered(r for p, r in new.items() if old.get(p) != r))


def test_route_hash_follows_route_equality() -> None:
    """``Route`` caches its hash (model.py): it must still agree with ``==``, which ignores
    the owning service, or route sets would hold duplicates and diffs would go wrong."""
    attrs = RouteAttributes(communities=("65535:0",), med=5)
    a = Route(V4, None, attrs, service="web")
    b = Route(ipaddress.ip_network("10.99.0.1/32"), None, RouteAttributes(("65535:0",), med=5))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert Route(V4, None, RouteAttributes(med=6)) != a
    assert commands.diff_peer({a}, {b}) == commands.PeerDiff(withdraw=(), announce=())
