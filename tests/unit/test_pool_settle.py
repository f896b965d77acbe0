"""Issue 15 item 6: a node joining the pool announces a preserve_connections service only
once every real-server check has reached its first rise/fall decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgplb.clock import FakeClock
from bgplb.config import Config
from bgplb.health.tracker import INITIAL, CheckKey, CheckResult, CheckState, advance
from bgplb.model import Decision, Reason

from .fixtures import Rig, config, ipvs_service, key, real_server, tcp_check

VIP = "10.99.0.1"
RS = ("10.1.0.1", "10.1.0.2", "10.1.0.3")
RISE, FALL = 3, 2


def pool_config(preserve: bool) -> Config:
    return config(
        ipvs_service(
            "pool",
            vips=(VIP,),
            preserve_connections=preserve,
            real_servers=[
                real_server(a, forward="dr", checks=[tcp_check(rise=RISE, fall=FALL)]) for a in RS
            ],
        )
    )


def check_key(address: str) -> CheckKey:
    return key("pool", "tcp", f"{address}:80")


class Probes:
    """Feeds results through the real rise/fall tracker at FakeClock times."""

    def __init__(self, rig: Rig, clock: FakeClock) -> None:
        self.rig, self.clock = rig, clock
        self.states: dict[str, CheckState] = dict.fromkeys(RS, INITIAL)

    async def result(self, address: str, ok: bool) -> None:
        await self.clock.advance(0.25)
        state = advance(self.states[address], CheckResult(ok, self.clock.now(), 0.001), RISE, FALL)
        self.states[address] = state
        self.rig.health.set(check_key(address), state)


@pytest.mark.parametrize("preserve", [True, False])
async def test_announced_only_after_every_real_server_check_settled(
    tmp_path: Path, preserve: bool
) -> None:
    rig = Rig(pool_config(preserve), tmp_path)
    probes = Probes(rig, rig.clock)
    for _ in range(RISE):  # the first two servers go up
        await probes.result(RS[0], True)
        await probes.result(RS[1], True)
    await probes.result(RS[2], False)  # one failure: not yet its fall decision
    result = await rig.start()
    decision = result.decisions["pool"]
    if not preserve:  # the seed's rule: enough servers up is enough
        assert decision.decision is Decision.ANNOUNCE
        assert rig.announced() == {VIP}
        return
    assert decision.decision is Decision.WITHDRAW
    assert decision.reason is Reason.POOL_SETTLING
    assert f"{RS[2]}:80/tcp" in decision.detail
    assert rig.announced() == set()
    # the dataplane is built meanwhile (weights follow health as usual)
    assert {str(r.key.address) for r in result.observed.owned.real_servers} == set(RS)

    await probes.result(RS[2], False)  # second failure: DOWN decided (fall = 2)
    result = await rig.rec.reconcile_once()
    assert result.decisions["pool"].decision is Decision.ANNOUNCE
    assert rig.announced() == {VIP}


async def test_a_server_that_rises_settles_too(tmp_path: Path) -> None:
    rig = Rig(pool_config(True), tmp_path)
    probes = Probes(rig, rig.clock)
    for _ in range(RISE):
        await probes.result(RS[0], True)
        await probes.result(RS[1], True)
    await probes.result(RS[2], True)  # 1 of 3 successes
    assert (await rig.start()).decisions["pool"].reason is Reason.POOL_SETTLING
    await probes.result(RS[2], True)
    assert (await rig.rec.reconcile_once()).decisions["pool"].reason is Reason.POOL_SETTLING
    await probes.result(RS[2], True)  # rise reached
    result = await rig.rec.reconcile_once()
    assert (result.decisions["pool"].decision, result.decisions["pool"].reason) == (
        Decision.ANNOUNCE,
        Reason.HEALTHY,
    )


async def test_no_results_at_all_is_not_settled(tmp_path: Path) -> None:
    rig = Rig(pool_config(True), tmp_path)
    result = await rig.start()
    # with nothing up the seed rule already says starting; service checks come first too
    assert result.decisions["pool"].decision is Decision.WITHDRAW
    assert result.decisions["pool"].reason in (Reason.POOL_SETTLING, Reason.STARTING)
