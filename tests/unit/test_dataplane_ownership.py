"""The netlink dataplane's pure parts: the ownership record, ownership rules, IPVS encoding."""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
from pathlib import Path

import pytest
from pyroute2.netlink.generic.ipvs import IPVS_CMD_NEW_SERVICE, ipvsmsg

from bgplb.dataplane.base import Dataplane
from bgplb.dataplane.ipvs import (
    V6_NETMASK,
    decode_dest,
    decode_service,
    dest_request,
    service_request,
)
from bgplb.dataplane.netlink import NetlinkDataplane, owns_address, owns_link
from bgplb.dataplane.ownership import (
    RECORD_NAME,
    OwnershipRecord,
    OwnershipStore,
    decode_record,
    encode_record,
)
from bgplb.dataplane.rtnl import ADDRESS_PROTO, LINK_ALIAS, KernelAddress, KernelLink
from bgplb.model import (
    AddressSpec,
    ForwardMethod,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServiceKey,
    VirtualServiceSpec,
)

V4, V6 = ipaddress.ip_address("10.99.0.1"), ipaddress.ip_address("fd00:99::1")
VS4 = VirtualServiceKey(V4, 80, Protocol.TCP)
VS6 = VirtualServiceKey(V6, 443, Protocol.UDP)
RS4 = RealServerKey(VS4, ipaddress.ip_address("10.0.1.2"), 8080)
RS6 = RealServerKey(VS6, ipaddress.ip_address("fd00:1::2"), 8443)

MIXED = OwnershipRecord(
    links=frozenset({"web", "api"}),
    addresses=frozenset({AddressSpec("web", V4), AddressSpec("web", V6)}),
    services=frozenset({VS4, VS6}),
    real_servers=frozenset({RS4, RS6}),
)


def test_netlink_dataplane_satisfies_the_protocol(tmp_path: Path) -> None:
    dp: Dataplane = NetlinkDataplane(tmp_path)  # opens nothing until start/observe/apply
    assert isinstance(dp, NetlinkDataplane)


def test_record_round_trips_with_mixed_families() -> None:
    data = json.loads(json.dumps(encode_record(MIXED)))
    assert decode_record(data) == MIXED
    assert data["version"] == 1
    assert data["addresses"] == [
        {"ifname": "web", "address": "10.99.0.1"},
        {"ifname": "web", "address": "fd00:99::1"},
    ]


def test_store_persists_atomically_and_reloads(tmp_path: Path) -> None:
    store = OwnershipStore(tmp_path / "state")
    assert store.record == OwnershipRecord()
    assert not store.path.exists()  # nothing written until something is owned
    store.update(MIXED)
    assert OwnershipStore(tmp_path / "state").record == MIXED
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [RECORD_NAME]


def test_removing_a_link_or_service_forgets_what_hangs_off_it() -> None:
    record = MIXED.without_link("web").without_service(VS4)
    assert record.links == {"api"}
    assert record.addresses == frozenset()
    assert record.services == {VS6}
    assert record.real_servers == {RS6}


@pytest.mark.parametrize("text", ["{not json", '{"version": 99}', '{"version": 1}', "[]"])
def test_unreadable_record_is_moved_aside_and_starts_empty(tmp_path: Path, text: str) -> None:
    (tmp_path / RECORD_NAME).write_text(text)
    store = OwnershipStore(tmp_path)
    assert store.record == OwnershipRecord()
    assert not (tmp_path / RECORD_NAME).exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{RECORD_NAME}.corrupt-")]
    assert len(aside) == 1
    assert aside[0].read_text() == text


def _link(kind: str | None, alias: str | None, name: str = "web") -> KernelLink:
    return KernelLink(index=5, name=name, kind=kind, alias=alias, up=True)


def test_link_ownership() -> None:
    empty, recorded = OwnershipRecord(), OwnershipRecord(links=frozenset({"web"}))
    assert owns_link(_link("dummy", LINK_ALIAS), empty)  # tagged: ours even without record
    assert owns_link(_link("dummy", None), recorded)  # untagged but recorded
    assert not owns_link(_link("dummy", None), empty)
    assert not owns_link(_link("dummy", "someone else"), recorded)  # re-tagged by someone
    assert not owns_link(_link("veth", LINK_ALIAS), recorded)  # only dummy links are ours
    assert not owns_link(_link(None, None, "lo"), recorded)


def _addr(proto: int | None, prefixlen: int = 32) -> KernelAddress:
    return KernelAddress(index=5, ifname="web", address=V4, prefixlen=prefixlen, proto=proto)


def test_address_ownership() -> None:
    empty = OwnershipRecord()
    recorded = OwnershipRecord(addresses=frozenset({AddressSpec("web", V4)}))
    assert owns_address(_addr(ADDRESS_PROTO), empty)  # tagged
    assert owns_address(_addr(None), recorded)  # kernel without IFA_PROTO: the record decides
    assert not owns_address(_addr(None), empty)
    assert not owns_address(_addr(3), recorded)  # tagged by someone else (kernel_ll)
    assert not owns_address(_addr(ADDRESS_PROTO, prefixlen=24), recorded)  # not a host address


def test_service_request_sets_persistence_and_v6_netmask() -> None:
    plain = service_request(VirtualServiceSpec(VS4, "rr"))
    assert plain["sched_name"] == "rr"
    assert plain["timeout"] == 0
    assert plain["flags"] == {"flags": 0, "mask": 0xFFFF}
    sticky = service_request(VirtualServiceSpec(VS6, "sh", persistence=300))
    assert sticky["timeout"] == 300
    assert sticky["flags"]["flags"] == 1
    assert sticky["netmask"] == V6_NETMASK
    assert socket.inet_aton(V6_NETMASK) == (128).to_bytes(4, sys.byteorder)  # host order


@pytest.mark.parametrize(("forward", "code"), [("masq", 0), ("tunnel", 2), ("dr", 3)])
def test_dest_request_forward_codes(forward: str, code: int) -> None:
    req = dest_request(RealServerSpec(RS4, weight=7, forward=ForwardMethod(forward)))
    assert req["fwd_method"] == code
    assert req["weight"] == 7


def _round_trip(attrs: list[tuple[str, object]], nla: str) -> ipvsmsg:
    msg = ipvsmsg()
    msg["cmd"] = IPVS_CMD_NEW_SERVICE
    msg["version"] = 1
    msg["attrs"] = [(nla, {"attrs": attrs})]
    msg.encode()
    parsed = ipvsmsg(msg.data)
    parsed.decode()
    return parsed


def test_decode_service_reads_the_kernels_values() -> None:
    stats = {"attrs": [("IPVS_STATS_ATTR_CONNS", 5), ("IPVS_STATS_ATTR_INBYTES", 900)]}
    msg = _round_trip(
        [
            ("IPVS_SVC_ATTR_AF", socket.AF_INET6),
            ("IPVS_SVC_ATTR_PROTOCOL", socket.IPPROTO_UDP),
            ("IPVS_SVC_ATTR_ADDR", str(V6)),
            ("IPVS_SVC_ATTR_PORT", 443),
            ("IPVS_SVC_ATTR_SCHED_NAME", "sh"),
            ("IPVS_SVC_ATTR_FLAGS", {"flags": 3, "mask": 0xFFFFFFFF}),  # persistent | hashed
            ("IPVS_SVC_ATTR_TIMEOUT", 120),
            ("IPVS_SVC_ATTR_STATS64", stats),
        ],
        "IPVS_CMD_ATTR_SERVICE",
    )
    decoded = decode_service(msg)
    assert decoded is not None
    spec, counters = decoded
    assert spec == VirtualServiceSpec(VS6, "sh", persistence=120)
    assert counters.connections == 5
    assert counters.bytes_in == 900


def test_decode_service_skips_fwmark_services() -> None:
    msg = _round_trip(
        [("IPVS_SVC_ATTR_AF", socket.AF_INET), ("IPVS_SVC_ATTR_FWMARK", 7)],
        "IPVS_CMD_ATTR_SERVICE",
    )
    assert decode_service(msg) is None


def test_decode_dest_reads_weight_forward_and_connections() -> None:
    msg = _round_trip(
        [
            ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET),
            ("IPVS_DEST_ATTR_ADDR", "10.0.1.2"),
            ("IPVS_DEST_ATTR_PORT", 8080),
            ("IPVS_DEST_ATTR_FWD_METHOD", 2),
            ("IPVS_DEST_ATTR_WEIGHT", 0),
            ("IPVS_DEST_ATTR_ACTIVE_CONNS", 4),
            ("IPVS_DEST_ATTR_INACT_CONNS", 6),
        ],
        "IPVS_CMD_ATTR_DEST",
    )
    spec, counters = decode_dest(VS4, msg)
    assert spec == RealServerSpec(RS4, weight=0, forward=ForwardMethod.TUNNEL)
    assert counters.active_connections == 4
    assert counters.inactive_connections == 6


def test_pool_flags_round_trip_and_unmodelled_flags_are_cleared() -> None:
    pool = VirtualServiceSpec(VS4, "mh", mh_fallback=True, mh_port=True)
    request = service_request(pool)
    # include/uapi/linux/ip_vs.h: IP_VS_SVC_F_SCHED1 = 0x8 (mh-fallback), SCHED2 = 0x10 (mh-port)
    assert request["flags"] == {"flags": 0x8 | 0x10, "mask": 0xFFFF}
    assert service_request(VirtualServiceSpec(VS4, "mh", mh_port=True))["flags"]["flags"] == 0x10
    for flags, expected in [
        (0x8 | 0x10 | 0x2, pool),  # hashed is not modelled: ignored
        (0x10, VirtualServiceSpec(VS4, "mh", mh_port=True)),  # fallback lost: a difference
        (0x2 | 0x4, VirtualServiceSpec(VS4, "mh")),  # one-packet: not modelled, cleared on set
    ]:
        msg = _round_trip(
            [
                ("IPVS_SVC_ATTR_AF", socket.AF_INET),
                ("IPVS_SVC_ATTR_PROTOCOL", socket.IPPROTO_TCP),
                ("IPVS_SVC_ATTR_ADDR", str(VS4.vip)),
                ("IPVS_SVC_ATTR_PORT", VS4.port),
                ("IPVS_SVC_ATTR_SCHED_NAME", "mh"),
                ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": 0xFFFFFFFF}),
            ],
            "IPVS_CMD_ATTR_SERVICE",
        )
        decoded = decode_service(msg)
        assert decoded is not None
        assert decoded[0] == expected, hex(flags)
