"""The agent with BFD on fakes (issue 14): a peer with ``bfd`` set gets its routes only
while its BFD session is Up (status says why not), the metrics follow the sessions, bfdd
starts before the speaker and stops only after the speaker closed its sessions, and a reload
reconfigures it."""

from __future__ import annotations

from pathlib import Path

from bgplb.bfd.base import BfdState
from bgplb.bfd.fake import FakeBfd

from .fixtures import EBGP_PEER, IBGP_PEER
from .test_agent import VIP, Harness, raw_config, write

BFD = {"interval_ms": 100, "multiplier": 3}


def bfd_raw(tmp_path: Path) -> dict[str, object]:
    raw = raw_config(tmp_path)
    raw["peers"][0]["bfd"] = BFD  # type: ignore[index]  # the eBGP peer only
    return raw


def harness(tmp_path: Path, initial: BfdState = BfdState.DOWN) -> tuple[Harness, FakeBfd]:
    h = Harness(tmp_path, bfd_raw(tmp_path))
    bfd = FakeBfd(initial, log=h.log)
    h.agent_kw = {"bfd": bfd}
    h.agent = h.new_agent()
    return h, bfd


def peer_status(h: Harness, address: str) -> dict[str, object]:
    [peer] = [p for p in h.agent.status().model_dump()["peers"] if p["address"] == address]
    return peer  # type: ignore[no-any-return]


def metric(h: Harness, line_start: str) -> str:
    text = h.agent.metrics.exposition().decode()
    return next((x for x in text.splitlines() if x.startswith(line_start)), "")


async def test_routes_wait_for_bfd_up_and_go_when_it_goes_down(tmp_path: Path) -> None:
    h, bfd = harness(tmp_path)
    await h.start()
    await h.until(lambda: VIP in h.announced(IBGP_PEER))  # no bfd there: not held
    await h.clock.advance(2.0)
    assert VIP not in h.announced(EBGP_PEER)
    st = peer_status(h, EBGP_PEER)
    assert (st["bfd"], st["held"]) == ("down", "bfd_not_up: bfd session down")
    assert peer_status(h, IBGP_PEER)["bfd"] is None
    assert peer_status(h, IBGP_PEER)["held"] == ""
    assert metric(h, f'bgplb_bfd_session_up{{peer="{EBGP_PEER}"}}').endswith(" 0.0")

    bfd.set_state(EBGP_PEER, BfdState.UP, h.clock.now())
    await h.until(lambda: VIP in h.announced(EBGP_PEER), limit=0.5)
    assert peer_status(h, EBGP_PEER)["held"] == ""
    assert metric(h, f'bgplb_bfd_session_up{{peer="{EBGP_PEER}"}}').endswith(" 1.0")
    up = f'bgplb_bfd_session_state_changes_total{{peer="{EBGP_PEER}",state="up"}}'
    assert metric(h, up).endswith(" 1.0")

    bfd.set_state(EBGP_PEER, BfdState.DOWN, h.clock.now())
    await h.until(lambda: VIP not in h.announced(EBGP_PEER), limit=0.5)
    assert VIP in h.announced(IBGP_PEER)
    down = f'bgplb_bfd_session_state_changes_total{{peer="{EBGP_PEER}",state="down"}}'
    assert metric(h, down).endswith(" 1.0")
    assert await h.stop() == 0


async def test_bfd_starts_before_the_speaker_and_stops_after_it(tmp_path: Path) -> None:
    h, _ = harness(tmp_path, BfdState.UP)
    await h.start()
    await h.until(lambda: VIP in h.announced(EBGP_PEER))
    assert await h.stop() == 0
    order = [(e.source, e.kind) for e in h.log.events if e.kind in ("start", "stop")]
    assert order == [("bfd", "start"), ("speaker", "start"), ("speaker", "stop"), ("bfd", "stop")]


async def test_a_reload_that_turns_bfd_off_releases_the_peer(tmp_path: Path) -> None:
    h, bfd = harness(tmp_path)
    await h.start()
    await h.clock.advance(2.0)
    assert VIP not in h.announced(EBGP_PEER)
    write(h.path, raw_config(tmp_path))  # the same without bfd
    result = await h.agent.reload()
    assert result.ok, result.errors
    assert bfd.reconfigured == 1
    assert bfd.sessions() == {}
    await h.until(lambda: VIP in h.announced(EBGP_PEER), limit=1.0)
    assert await h.stop() == 0


async def test_bgp_lb_status_shows_bfd_and_why_routes_are_held(tmp_path: Path) -> None:
    import io

    from bgplb.client import print_status

    h, _ = harness(tmp_path)
    await h.start()
    await h.clock.advance(1.0)
    out = io.StringIO()
    print_status(h.agent.status(), out)
    [row] = [line for line in out.getvalue().splitlines() if line.startswith(EBGP_PEER)]
    assert row.endswith("bfd down; held: bfd_not_up: bfd session down")
    [other] = [line for line in out.getvalue().splitlines() if line.startswith(IBGP_PEER)]
    assert "bfd" not in other
    assert await h.stop() == 0
