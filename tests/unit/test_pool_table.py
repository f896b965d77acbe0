"""Pool mode's Maglev tables (issue 15 item 1): destination order, the order repair that runs
only while nothing is announced, and the fingerprint of the table's inputs."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from bgplb.admin import AdminState
from bgplb.config import Config
from bgplb.health.tracker import CheckKey, CheckState
from bgplb.model import (
    AddRealServer,
    AddVirtualService,
    ObservedDataplane,
    Protocol,
    RealServerKey,
    UpdateRealServer,
    VirtualServiceKey,
    VirtualServiceSpec,
)
from bgplb.plan import plan
from bgplb.policy import desired_state
from bgplb.pool import PoolTable, fingerprint, order_repairable, pool_views

from .fixtures import Rig, config, down, ip, ipvs_service, key, real_server, tcp_check, up

VIP = "10.99.0.1"
RS = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4")
VS = VirtualServiceKey(ip(VIP), 80, Protocol.TCP)
CANON = tuple(RealServerKey(VS, ip(a), 80) for a in RS)


def pool_config(weights: tuple[int, ...] = (1, 2, 3, 4)) -> Config:
    return config(
        ipvs_service(
            "pool",
            vips=(VIP,),
            preserve_connections=True,
            real_servers=[
                real_server(a, forward="dr", weight=w, checks=[tcp_check()])
                for a, w in zip(RS, weights, strict=True)
            ],
        )
    )


def health(*down_servers: str) -> dict[CheckKey, CheckState]:
    return {key("pool", "tcp", f"{a}:80"): (down() if a in down_servers else up()) for a in RS}


def test_real_servers_are_added_in_reverse_order_at_their_weight_then_lowered() -> None:
    cfg = pool_config()
    desired = desired_state(cfg, health(RS[1]), AdminState(), 0.0)
    actions = plan(desired, ObservedDataplane(), {}).actions
    pool = [a for a in actions if isinstance(a, AddRealServer | UpdateRealServer)]
    assert [
        (type(a).__name__, str(a.real_server.key.address), a.real_server.weight) for a in pool
    ] == [
        ("AddRealServer", RS[3], 4),
        ("AddRealServer", RS[2], 3),
        ("AddRealServer", RS[1], 2),  # unhealthy, but added at its weight: it keeps its slots
        ("AddRealServer", RS[0], 1),
        ("UpdateRealServer", RS[1], 0),  # only after every add
    ]
    assert isinstance(actions[actions.index(pool[0]) - 1], AddVirtualService)


def test_order_repairable() -> None:
    table = PoolTable("pool", VS, CANON, (1, 1, 1, 1))
    assert order_repairable(table, ())
    assert order_repairable(table, CANON)
    assert order_repairable(table, CANON[2:])  # adds of 1 then 0 go to the head
    assert not order_repairable(table, CANON[:2])
    assert not order_repairable(table, (CANON[1], CANON[0], CANON[2], CANON[3]))
    other = RealServerKey(VS, ip("10.1.0.9"), 80)
    assert order_repairable(table, (CANON[0], other, CANON[1], CANON[2], CANON[3]))


async def built(tmp_path: Path, *down_servers: str) -> Rig:
    rig = Rig(pool_config(), tmp_path)
    rig.health.states.update(health(*down_servers))
    result = await rig.start()
    assert rig.dp.dest_order[VS] == list(CANON)  # the fake puts each add at the head
    assert [v.order_ok for v in result.pools] == [True]
    return rig


async def test_the_dump_ends_in_canonical_order_and_weight0_keeps_its_place(
    tmp_path: Path,
) -> None:
    rig = await built(tmp_path, RS[2])
    assert rig.dp.real_servers[CANON[2]].weight == 0
    assert rig.announced() == {VIP}


async def test_a_wrong_order_is_rebuilt_only_while_nothing_is_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await built(tmp_path)
    wrong = (CANON[1], CANON[0], CANON[2], CANON[3])
    rig.dp.reorder(VS, wrong)
    rig.log.clear()
    with caplog.at_level(logging.WARNING, logger="bgplb"):
        result = await rig.rec.reconcile_once()
        await rig.rec.reconcile_once()
    # announced: not touched, reported (status/metric) and warned about once
    assert result.actions == ()
    assert rig.announced() == {VIP}
    assert [(v.order_ok, v.observed) for v in result.pools] == [(False, wrong)]
    warnings = [r for r in caplog.records if getattr(r, "event", "") == "pool_table_order_wrong"]
    assert len(warnings) == 1
    assert "drain the node" in getattr(warnings[0], "fix", "")

    rig.admin.drain(None)  # the fix the warning names
    result = await rig.rec.reconcile_once()  # within the drain delay: still announced
    assert rig.announced() == {VIP}
    assert result.actions == ()
    await rig.clock.advance(10.0)  # past the drain delay: withdrawn, then rebuilt
    rig.log.clear()
    result = await rig.rec.reconcile_once()
    assert rig.announced() == set()
    events = [(e.source, e.kind) for e in rig.log.events]
    first_speaker = next(i for i, e in enumerate(events) if e[0] == "speaker")
    assert first_speaker < events.index(("dataplane", "RemoveVirtualService")), events
    kinds = [type(a).__name__ for a in result.actions]
    assert kinds[:2] == ["RemoveVirtualService", "AddVirtualService"], kinds
    assert rig.dp.dest_order[VS] == list(CANON)
    assert [v.order_ok for v in result.pools] == [True]


async def test_a_wrong_order_before_the_first_announce_is_rebuilt(tmp_path: Path) -> None:
    rig = Rig(pool_config(), tmp_path)
    rig.health.states.update(health())
    desired = desired_state(rig.cfg, rig.health.snapshot(), AdminState(), 0.0)
    # an earlier run (or another tool) made the right objects in canonical order: each add
    # went to the head, so the dump lists them reversed
    await rig.dp.apply(AddVirtualService(next(iter(desired.dataplane.services))))
    for spec in sorted(desired.dataplane.real_servers, key=lambda r: CANON.index(r.key)):
        await rig.dp.apply(AddRealServer(spec))
    assert rig.dp.dest_order[VS] == list(reversed(CANON))
    result = await rig.start()
    kinds = [type(a).__name__ for a in result.actions]
    assert "RemoveVirtualService" in kinds
    assert kinds.index("RemoveVirtualService") < kinds.index("AddVirtualService")
    assert rig.dp.dest_order[VS] == list(CANON)
    assert [v.order_ok for v in result.pools] == [True]
    assert rig.announced() == {VIP}  # announced after the rebuild, in the same pass


def test_fingerprint() -> None:
    spec = VirtualServiceSpec(VS, "mh", None, True, True)
    table = PoolTable("pool", VS, CANON, (1, 2, 3, 4))
    same = fingerprint(table, spec, CANON)
    assert len(same) == 16
    assert int(same, 16) >= 0
    assert fingerprint(PoolTable("pool", VS, CANON, (1, 2, 3, 4)), spec, CANON) == same
    assert fingerprint(table, spec, (CANON[1], CANON[0], *CANON[2:])) != same  # order
    assert fingerprint(PoolTable("pool", VS, CANON, (1, 2, 3, 5)), spec, CANON) != same
    assert fingerprint(table, dataclasses.replace(spec, mh_port=False), CANON) != same
    assert fingerprint(table, spec, CANON, table_size=251) != same


async def test_an_unhealthy_server_does_not_change_the_fingerprint(tmp_path: Path) -> None:
    rig = await built(tmp_path)
    before = rig.rec.last.pools[0].fingerprint if rig.rec.last else ""
    rig.health.set(key("pool", "tcp", f"{RS[0]}:80"), down())
    result = await rig.rec.reconcile_once()
    assert rig.dp.real_servers[CANON[0]].weight == 0
    assert result.pools[0].fingerprint == before != ""


def test_views_of_two_nodes_agree_only_with_the_same_order() -> None:
    cfg = pool_config()
    desired = desired_state(cfg, health(), AdminState(), 0.0)
    spec = next(iter(desired.dataplane.services))
    state = dataclasses.replace(desired.dataplane)
    a = ObservedDataplane(owned=state, dest_order={VS: CANON})
    b = ObservedDataplane(owned=state, dest_order={VS: tuple(reversed(CANON))})
    va, vb = pool_views(desired.pools, a), pool_views(desired.pools, b)
    assert spec.mh_fallback
    assert spec.mh_port
    assert va[0].order_ok
    assert not vb[0].order_ok
    assert va[0].fingerprint != vb[0].fingerprint
