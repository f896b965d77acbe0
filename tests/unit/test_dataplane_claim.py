"""Ownership claims: one durable record write per batch, before the first kernel change.

The netlink adapter runs here on a stub rtnetlink (no kernel); the reconciler on the fakes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from bgplb.dataplane.base import DataplaneError
from bgplb.dataplane.bounded import KernelCallError
from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.dataplane.ownership import RECORD_NAME, OwnershipRecord, claims, decode_record
from bgplb.dataplane.rtnl import ADDRESS_PROTO, LINK_ALIAS, KernelAddress, KernelLink
from bgplb.model import (
    AddAddress,
    AddRealServer,
    AddressSpec,
    AddVirtualService,
    EnsureLink,
    IPAddress,
    LinkSpec,
    Protocol,
    RealServerKey,
    RealServerSpec,
    RemoveAddress,
    VirtualServiceKey,
    VirtualServiceSpec,
)
from bgplb.plan import batches
from bgplb.reconciler import ADD_BATCH

from .fixtures import Rig, ip, key, up, web_and_api

LO = KernelLink(index=1, name="lo", kind=None, alias=None, up=True)


def vip(i: int) -> IPAddress:
    return ipaddress.ip_address(f"10.99.{i // 250}.{i % 250 + 1}")


class StubRtnl:
    """Links and addresses in memory; every change first reads the record file, so a test
    can see what was durable at the moment of each kernel change."""

    def __init__(self, record_path: Path, proto: int | None = ADDRESS_PROTO) -> None:
        self.record_path = record_path
        self.proto = proto  # what our adds get (None: a kernel < 6.1, no IFA_PROTO)
        self.links_ = [LO]
        self.addrs: list[KernelAddress] = []
        self.on_disk_at_change: list[OwnershipRecord] = []
        self.dumps = 0
        self.link_dumps = 0
        self.in_flight = 0
        self.most_in_flight = 0

    def _saw(self) -> None:
        text = self.record_path.read_text() if self.record_path.exists() else None
        record = decode_record(json.loads(text)) if text else OwnershipRecord()
        self.on_disk_at_change.append(record)

    async def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def links(self) -> list[KernelLink]:
        self.link_dumps += 1
        return list(self.links_)

    async def addresses(self, links: list[KernelLink]) -> list[KernelAddress]:
        self.dumps += 1
        return list(self.addrs)

    async def add_dummy(self, name: str) -> bool:
        self._saw()
        self.links_.append(KernelLink(len(self.links_) + 1, name, "dummy", None, False))
        return True

    async def tag_and_raise(self, link: KernelLink) -> None:
        self.links_ = [
            KernelLink(x.index, x.name, x.kind, LINK_ALIAS, True) if x.name == link.name else x
            for x in self.links_
        ]

    async def delete_link(self, link: KernelLink) -> bool:
        self.links_ = [x for x in self.links_ if x.name != link.name]
        return True

    async def add_address(self, index: int, ifname: str, address: IPAddress) -> bool:
        self._saw()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)  # a netlink round trip: other calls run meanwhile
        self.in_flight -= 1
        if any(a.address == address and a.index == index for a in self.addrs):
            return False
        self.addrs.append(KernelAddress(index, ifname, address, address.max_prefixlen, self.proto))
        return True

    def add_foreign(self, address: IPAddress, proto: int | None) -> None:
        self.addrs.append(KernelAddress(1, "lo", address, address.max_prefixlen, proto))

    async def delete_address(self, addr: KernelAddress) -> bool:
        self._saw()
        self.addrs = [a for a in self.addrs if a.address != addr.address]
        return True


class NoIpvs:
    async def open(self) -> None:
        raise KernelCallError("open IPVS", 2, "no IPVS here")

    def close(self) -> None:
        pass


def adapter(tmp_path: Path, proto: int | None = ADDRESS_PROTO) -> tuple[NetlinkDataplane, StubRtnl]:
    dp = NetlinkDataplane(tmp_path)
    stub = StubRtnl(tmp_path / RECORD_NAME, proto)
    dp._rtnl = stub  # type: ignore[assignment]
    dp._ipvs = NoIpvs()  # type: ignore[assignment]
    return dp, stub


def adds(n: int) -> list[AddAddress]:
    return [AddAddress(AddressSpec("lo", vip(i))) for i in range(n)]


async def test_one_claim_writes_every_address_before_the_first_add(tmp_path: Path) -> None:
    dp, stub = adapter(tmp_path)
    actions = adds(200)
    await dp.claim(actions)
    assert dp._store.writes == 1
    for action in actions:
        await dp.apply(action)
    assert dp._store.writes == 1  # the adds wrote nothing more
    everything = {a.address for a in actions}
    assert stub.on_disk_at_change[0].addresses == everything  # durable before the first add
    assert len(stub.on_disk_at_change) == 200


async def test_a_claimed_batch_of_adds_reads_the_links_once(tmp_path: Path) -> None:
    dp, stub = adapter(tmp_path)
    await dp.claim(adds(100))
    for action in adds(100):
        await dp.apply(action)
    assert stub.link_dumps == 1
    assert len(stub.addrs) == 100


async def test_adds_run_concurrently_and_observe_waits_for_them(tmp_path: Path) -> None:
    dp, stub = adapter(tmp_path)
    actions = adds(50)
    await dp.claim(actions)
    running = [asyncio.ensure_future(dp.apply(a)) for a in actions]
    await asyncio.sleep(0)
    observed = await dp.observe()  # exclusive: only once every add in flight is done
    await asyncio.gather(*running)
    assert stub.most_in_flight > 1
    assert len(observed.owned.addresses) == 50
    assert dp._store.writes == 1


async def test_concurrent_adds_without_a_claim_lose_no_record_entry(tmp_path: Path) -> None:
    dp, stub = adapter(tmp_path)
    await asyncio.gather(*(dp.apply(a) for a in adds(20)))
    on_disk = decode_record(json.loads((tmp_path / RECORD_NAME).read_text()))
    assert on_disk.addresses == {a.address for a in adds(20)}
    for i, seen in enumerate(stub.on_disk_at_change):  # each durable before its own add
        assert AddressSpec("lo", vip(i)) in seen.addresses


async def test_without_a_claim_each_add_still_writes_first(tmp_path: Path) -> None:
    dp, stub = adapter(tmp_path)
    for action in adds(3):
        await dp.apply(action)
    assert dp._store.writes == 3
    for i, seen in enumerate(stub.on_disk_at_change):
        assert AddressSpec("lo", vip(i)) in seen.addresses


async def test_removals_write_once_at_the_next_observe_not_per_removal(tmp_path: Path) -> None:
    dp, stub = adapter(tmp_path)
    await dp.claim(adds(50))
    for action in adds(50):
        await dp.apply(action)
    await dp.observe()
    writes = dp._store.writes
    removals = [RemoveAddress(a.address) for a in adds(50)]
    dumps = stub.dumps
    await dp.claim(removals)
    for action in removals:
        await dp.apply(action)
    assert stub.addrs == []
    assert stub.dumps == dumps + 1  # one address dump for the batch, not one per removal
    assert dp._store.writes == writes  # nothing written yet: the file is a superset
    assert dp._store.dirty
    await dp.observe()
    assert dp._store.writes == writes + 1
    assert json.loads((tmp_path / RECORD_NAME).read_text())["addresses"] == []


async def test_close_writes_what_removals_left_in_memory(tmp_path: Path) -> None:
    dp, _ = adapter(tmp_path)
    await dp.claim(adds(2))
    for action in adds(2):
        await dp.apply(action)
    await dp.apply(RemoveAddress(AddressSpec("lo", vip(0))))
    await dp.close()
    on_disk = decode_record(json.loads((tmp_path / RECORD_NAME).read_text()))
    assert on_disk.addresses == {AddressSpec("lo", vip(1))}


@pytest.mark.parametrize("their_proto", [None, 3])
async def test_a_claim_does_not_make_a_foreign_address_ours(
    tmp_path: Path, their_proto: int | None
) -> None:
    """Kernel without IFA_PROTO (None) or someone else's tag: on EEXIST the record as it was
    before the claim decides, and the claim is taken back durably."""
    dp, stub = adapter(tmp_path, proto=their_proto)
    spec = AddressSpec("lo", vip(7))
    await dp.claim([AddAddress(spec)])
    assert spec in dp.record.addresses
    stub.add_foreign(spec.address, their_proto)  # appears between the claim and the add
    with pytest.raises(DataplaneError, match="not ours"):
        await dp.apply(AddAddress(spec))
    assert spec not in dp.record.addresses
    assert not dp._store.dirty  # taken back on disk, not only in memory
    observed = await dp.observe()
    assert spec in observed.foreign_addresses
    assert spec not in observed.owned.addresses


async def test_an_untagged_address_recorded_before_the_claim_stays_ours(tmp_path: Path) -> None:
    dp, _ = adapter(tmp_path, proto=None)  # kernel < 6.1: the record is the proof
    spec = AddressSpec("lo", vip(1))
    await dp.claim([AddAddress(spec)])
    await dp.apply(AddAddress(spec))
    await dp.claim([AddAddress(spec)])  # the agent re-adds it (e.g. the next pass)
    await dp.apply(AddAddress(spec))  # EEXIST, ours by the record
    assert spec in (await dp.observe()).owned.addresses


async def test_a_claim_never_names_a_foreign_link(tmp_path: Path) -> None:
    dp, stub = adapter(tmp_path)
    stub.links_.append(KernelLink(9, "web", "dummy", None, True))  # someone else's dummy
    await dp.claim([EnsureLink(LinkSpec("web")), EnsureLink(LinkSpec("api"))])
    assert dp.record.links == {"api"}
    with pytest.raises(DataplaneError, match="not ours"):
        await dp.apply(EnsureLink(LinkSpec("web")))
    await dp.apply(EnsureLink(LinkSpec("api")))
    assert stub.on_disk_at_change[0].links == {"api"}  # durable before the link was made


async def test_claims_untried_are_not_ownership_and_are_pruned(tmp_path: Path) -> None:
    """A pass that ends between its claim and its adds: the next observe drops the claim."""
    dp, stub = adapter(tmp_path, proto=None)
    spec = AddressSpec("lo", vip(3))
    await dp.claim([AddAddress(spec)])
    stub.add_foreign(spec.address, None)
    observed = await dp.observe()
    assert spec in observed.foreign_addresses
    assert spec not in dp.record.addresses


def test_claims_name_what_actions_create() -> None:
    svc = VirtualServiceKey(vip(1), 80, Protocol.TCP)
    rs = RealServerSpec(RealServerKey(svc, ip("10.0.0.2"), 80))
    record = claims(
        [
            EnsureLink(LinkSpec("web")),
            AddAddress(AddressSpec("web", vip(1))),
            AddVirtualService(VirtualServiceSpec(svc)),
            AddRealServer(rs),
            RemoveAddress(AddressSpec("web", vip(2))),
        ]
    )
    assert record == OwnershipRecord(
        links=frozenset({"web"}),
        addresses=frozenset({AddressSpec("web", vip(1))}),
        services=frozenset({svc}),
        real_servers=frozenset({rs.key}),
    )


# --------------------------------------------------------------------------- reconciler


async def test_the_reconciler_claims_once_before_the_first_kernel_change(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    await r.start()
    ownership_events = r.log.of("ownership")
    kernel = r.log.of("dataplane")
    assert [e.kind for e in ownership_events] == ["claim"]
    assert ownership_events[0].seq < kernel[0].seq
    claimed: Any = ownership_events[0].detail
    assert claimed == claims(e.detail for e in kernel)


async def test_a_failed_claim_does_not_stop_the_pass(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    r.dp.fail_next_claim()
    result = await r.start()
    assert [e.kind for e in r.log.of("ownership")] == ["claim_failed"]
    assert result.errors == ()
    assert r.announced()


def test_address_adds_are_batched_and_everything_else_goes_alone() -> None:
    link = EnsureLink(LinkSpec("web"))
    rm = RemoveAddress(AddressSpec("lo", vip(999)))
    a = adds(70)
    groups = batches((link, *a, rm, *a[:2]), ADD_BATCH)
    assert [len(g) for g in groups] == [1, ADD_BATCH, ADD_BATCH, 70 - 2 * ADD_BATCH, 1, 2]
    assert [x for g in groups for x in g] == [link, *a, rm, *a[:2]]  # the order is kept


async def test_the_reconciler_sends_address_adds_at_once(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    real_apply = r.dp.apply
    in_flight, most = [0], [0]

    async def slow_apply(action: Any) -> None:
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        await asyncio.sleep(0)
        in_flight[0] -= 1
        await real_apply(action)

    r.dp.apply = slow_apply  # type: ignore[method-assign]
    result = await r.start()
    assert most[0] == 2  # web's and api's VIPs
    assert result.errors == ()
    assert r.announced()


async def test_a_steady_pass_claims_nothing(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    await r.start()
    r.log.clear()
    r.rec.set_config(web_and_api())
    await r.rec.reconcile_once()
    assert r.log.of("ownership") == []
