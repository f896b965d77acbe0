"""Pool mode (preserve_connections) through the real adapter: the kernel's destination list
ends in the config's order, the mh flags are set, a weight-0 server keeps its place, and a
wrong order is rebuilt while nothing is announced (issue 15 item 1)."""

from __future__ import annotations

import pytest

from bgplb.admin import AdminState
from bgplb.config import Config
from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.health.tracker import CheckKey, CheckResult, CheckState
from bgplb.model import (
    AddRealServer,
    AddVirtualService,
    CheckStatus,
    Protocol,
    RealServerKey,
    VirtualServiceKey,
)
from bgplb.plan import plan
from bgplb.policy import desired_state
from bgplb.pool import pool_views

from .conftest import Topology
from .specs import ip

pytestmark = pytest.mark.kernel

VIP = "10.99.0.7"
SERVERS = ("10.0.7.4", "10.0.7.2", "10.0.7.3", "10.0.7.1")  # config order, not sorted


def pool_config() -> Config:
    return Config.model_validate(
        {
            "node": {"router_id": "10.0.100.1", "local_as": 65001},
            "peers": [{"address": "10.0.100.2", "asn": 65000}],
            "services": [
                {
                    "name": "pool",
                    "vips": [VIP],
                    "preserve_connections": True,
                    "ports": [{"port": 80}],
                    "real_servers": [
                        {"address": a, "forward": "dr", "weight": w, "checks": [{"type": "tcp"}]}
                        for a, w in zip(SERVERS, (1, 2, 3, 4), strict=True)
                    ],
                }
            ],
        }
    )


def health(*down: str) -> dict[CheckKey, CheckState]:
    out = {}
    for a in SERVERS:
        ok = a not in down
        status = CheckStatus.UP if ok else CheckStatus.DOWN
        out[CheckKey("pool", f"{a}:80", "tcp")] = CheckState(
            status, CheckResult(ok, 1.0, 0.001), 1.0, 3 if ok else 0, 0 if ok else 2
        )
    return out


KEY = VirtualServiceKey(ip(VIP), 80, Protocol.TCP)
CANON = tuple(RealServerKey(KEY, ip(a), 80) for a in SERVERS)


async def test_pool_table_order_flags_and_weight_zero(
    topology: Topology, dataplane: NetlinkDataplane
) -> None:
    desired = desired_state(pool_config(), health(SERVERS[2]), AdminState(), 2.0)
    steps = plan(desired, await dataplane.observe(), {})
    for action in steps.actions:
        await dataplane.apply(action)
    observed = await dataplane.observe()

    assert observed.dest_order[KEY] == CANON  # the kernel's dump: config order
    [spec] = [s for s in observed.owned.services if s.key == KEY]
    assert (spec.scheduler, spec.mh_fallback, spec.mh_port) == ("mh", True, True)
    weights = {r.key: r.weight for r in observed.owned.real_servers}
    assert weights == dict(zip(CANON, (1, 2, 0, 4), strict=True))  # unhealthy: 0, in place
    [view] = pool_views(desired.pools, observed)
    assert view.order_ok
    # the plan has nothing left to do: flags and weights read back equal
    assert plan(desired, observed, {}).actions == ()


async def test_a_wrong_order_is_rebuilt_while_not_announced(
    topology: Topology, dataplane: NetlinkDataplane
) -> None:
    desired = desired_state(pool_config(), health(), AdminState(), 2.0)
    [spec] = desired.dataplane.services
    await dataplane.apply(AddVirtualService(spec))
    by_key = {r.key: r for r in desired.dataplane.real_servers}
    for key in CANON:  # in config order: each goes to the head, the dump is reversed
        await dataplane.apply(AddRealServer(by_key[key]))
    observed = await dataplane.observe()
    assert observed.dest_order[KEY] == tuple(reversed(CANON))
    assert not pool_views(desired.pools, observed)[0].order_ok

    steps = plan(desired, observed, {})
    assert steps.rebuilt == frozenset({KEY})
    for action in steps.actions:
        await dataplane.apply(action)
    observed = await dataplane.observe()
    assert observed.dest_order[KEY] == CANON
    assert pool_views(desired.pools, observed)[0].order_ok
