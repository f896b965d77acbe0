"""Issue 13 item 8: the long computations on the event loop give it a turn every ~2 ms
(cooperative.py) instead of holding it for the whole pass, reload or status document."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bgplb.policy
import bgplb.status_view
from bgplb import cooperative
from bgplb.config import Config
from bgplb.reload import changed_services

from .fixtures import Rig, announce_service, config, key, tcp_check, up

SERVICES = 60


def many(n: int = SERVICES, **node_kw: Any) -> Config:
    return config(
        *(
            announce_service(
                f"s{i}", vips=(f"10.98.{i // 250}.{1 + i % 250}",), checks=[tcp_check()]
            )
            for i in range(n)
        ),
        **node_kw,
    )


class Turns:
    """Counts the loop's iterations: a callback that re-arms itself with ``call_soon``."""

    def __init__(self) -> None:
        self.count = 0
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


@pytest.fixture
def every_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget of 0: the loop gets a turn at every step (the real one is ~2 ms)."""
    monkeypatch.setattr(cooperative, "BUDGET", 0.0)


def test_run_cooperatively_same_result_and_turns() -> None:
    def steps() -> Iterator[None]:
        total = 0
        for i in range(10):
            total += i
            yield
        return total  # type: ignore[misc]

    async def main() -> tuple[int, int]:
        turns = Turns()
        turns.start()
        try:
            got = await cooperative.run_cooperatively(steps(), budget=0.0)  # type: ignore[arg-type]
        finally:
            turns.stop()
        return got, turns.count

    got, count = asyncio.run(main())
    assert got == cooperative.run_to_end(steps()) == 45  # type: ignore[arg-type]
    assert count >= 10


def test_run_cooperatively_keeps_working_within_the_budget() -> None:
    """No turn while the budget lasts (the timer never moves): one go, like before."""

    def steps() -> Iterator[None]:
        for _ in range(100):
            yield
        return "done"  # type: ignore[misc]

    async def main() -> tuple[str, int]:
        turns = Turns()
        turns.start()
        got = await cooperative.run_cooperatively(steps(), 1.0, timer=lambda: 0.0)  # type: ignore[arg-type]
        count = turns.count
        turns.stop()
        return got, count

    assert asyncio.run(main()) == ("done", 0)


async def test_a_pass_gives_the_loop_turns_between_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_item: None
) -> None:
    """Failed on 9b96d21: the desired state of every service was computed in one go."""
    rig = Rig(many(), tmp_path)
    for i in range(SERVICES):
        rig.health.set(key(f"s{i}", "tcp"), up())
    turns = Turns()
    seen: list[int] = []
    decide = bgplb.policy.decide

    def counting(*args: Any, **kw: Any) -> Any:
        seen.append(turns.count)
        return decide(*args, **kw)

    monkeypatch.setattr(bgplb.policy, "decide", counting)
    turns.start()
    try:
        result = await rig.start()
    finally:
        turns.stop()
    assert len(seen) == SERVICES
    assert len(set(seen)) > SERVICES // 2, "the loop did not run between services"
    assert len(rig.announced()) == SERVICES  # same outcome as in one go
    assert result.decisions["s0"].decision.value == "announce"


async def test_the_status_document_gives_the_loop_turns_and_is_the_same_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_item: None
) -> None:
    """Failed on 9b96d21 (no status_json: built and serialised in one go)."""
    from bgplb.agent import Agent
    from bgplb.bgp.fake import FakeSpeaker
    from bgplb.clock import FakeClock
    from bgplb.dataplane.fake import FakeDataplane
    from bgplb.eventlog import EventLog

    cfg = many(state_dir=str(tmp_path / "state"))
    clock = FakeClock()
    events = EventLog(clock)
    agent = Agent(
        cfg, dataplane=FakeDataplane(events, clock), speaker=FakeSpeaker(events), clock=clock
    )
    await agent.dataplane.start(agent.reconciler.wake)
    await agent.speaker.start(cfg, agent.reconciler.wake)
    await agent.reconciler.reconcile_once()
    turns = Turns()
    seen: list[int] = []
    service = bgplb.status_view._service

    def counting(*args: Any, **kw: Any) -> Any:
        seen.append(turns.count)
        return service(*args, **kw)

    monkeypatch.setattr(bgplb.status_view, "_service", counting)
    turns.start()
    try:
        text = await agent.status_json()
    finally:
        turns.stop()
    assert len(set(seen)) > SERVICES // 2, "the loop did not run between services"
    assert text == agent.status().model_dump_json()
    assert len(json.loads(text)["services"]) == SERVICES


def test_json_steps_is_model_dump_json_with_no_services() -> None:
    from bgplb.status_document import json_steps
    from tests.unit.test_api_support import sample_status

    status = sample_status(frozenset(), False, True)
    assert cooperative.run_to_end(json_steps(status)) == status.model_dump_json()
    empty = status.model_copy(update={"services": []})
    assert cooperative.run_to_end(json_steps(empty)) == empty.model_dump_json()


def test_changed_services_looks_each_name_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed on 9b96d21: ``Config.service`` (a linear search) per name, O(n^2): 0.3 s on
    the loop for a 1,000-service reload."""
    old = many(20)
    new = config(
        *(
            announce_service(f"s{i}", vips=(f"10.98.0.{1 + i}",), checks=[tcp_check(interval=2.0)])
            for i in range(1, 21)
        )
    )
    calls = []
    original = Config.service

    def counted(self: Config, name: str) -> Any:
        calls.append(name)
        return original(self, name)

    monkeypatch.setattr(Config, "service", counted)
    # s1..s19 changed (interval and VIP), s20 added, s0 removed
    got = changed_services(old, new)
    assert got == [*sorted(f"s{i}" for i in range(1, 21)), "s0"]
    assert calls == []


async def test_the_agent_freezes_its_long_lived_heap(tmp_path: Path) -> None:
    """Failed on 9b96d21: a full collection walked every config object on the loop."""
    from bgplb.agent import Agent
    from bgplb.bgp.fake import FakeSpeaker
    from bgplb.clock import FakeClock
    from bgplb.dataplane.fake import FakeDataplane
    from bgplb.eventlog import EventLog

    gc.unfreeze()
    cfg = many(3, state_dir=str(tmp_path / "state"))
    clock = FakeClock()
    events = EventLog(clock)
    agent = Agent(
        cfg, dataplane=FakeDataplane(events, clock), speaker=FakeSpeaker(events), clock=clock
    )
    try:
        await agent.start()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        agent.loop_lag.stop()


async def test_a_pass_awaits_an_async_on_pass(tmp_path: Path) -> None:
    """Failed on 9b96d21: the hook was called and its coroutine never awaited (the agent's
    metrics after a pass, 10-55 ms at 1,000 services, now give the loop turns)."""
    rig = Rig(many(3), tmp_path)
    seen: list[tuple[str, int]] = []

    async def hook(result: Any) -> None:
        seen.append(("start", rig.rec.passes))
        await asyncio.sleep(0)
        seen.append(("end", rig.rec.passes))

    rig.rec._on_pass = hook
    await rig.start()
    assert seen == [("start", 1), ("end", 1)]


async def test_the_plan_gives_the_loop_turns_between_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_item: None
) -> None:
    """Failed on 4f35956: the plan (5-19 ms at 1,000 services, every pass) ran in one go.
    Its result is the same as the one-go ``plan``."""
    import bgplb.plan
    import bgplb.reconciler

    rig = Rig(many(), tmp_path)
    for i in range(SERVICES):
        rig.health.set(key(f"s{i}", "tcp"), up())
    await rig.start()
    turns = Turns()
    seen: list[int] = []
    results: list[tuple[Any, Any]] = []
    steps = bgplb.plan.plan_steps

    def counting(*args: Any) -> Any:
        seen.append(turns.count)
        got = yield from steps(*args)
        results.append((got, bgplb.plan.plan(*args)))
        seen.append(turns.count)
        return got

    monkeypatch.setattr(bgplb.reconciler, "plan_steps", counting)
    turns.start()
    try:
        await rig.rec.reconcile_once()
    finally:
        turns.stop()
    assert len(seen) == 2
    assert seen[1] - seen[0] > SERVICES // 2, "the loop did not run while planning"
    ((cooperative_plan, one_go),) = results
    assert cooperative_plan == one_go
