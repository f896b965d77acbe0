"""Fixtures for the BGP tests: FRR labs (tests.harness.frr) and ExaBGP speakers in them."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bgplb.bgp.exabgp import ExaBGPSpeaker
from bgplb.config import Config
from tests.harness.agent_proc import agent_factory  # noqa: F401  (fixture)
from tests.harness.frr import BgpLab, bgp_lab_factory  # noqa: F401  (fixture)
from tests.harness.netns import tempdir

if os.geteuid() != 0 or not shutil.which("vtysh"):
    pytest.skip("BGP tests need root and FRR", allow_module_level=True)


def make_config(
    runtime_dir: Path,
    router_id: str,
    local_as: int,
    peers: list[dict[str, Any]],
) -> Config:
    return Config.model_validate(
        {
            "node": {"router_id": router_id, "local_as": local_as, "runtime_dir": str(runtime_dir)},
            "peers": peers,
        }
    )


def lb_peers(bl: BgpLab, n: int, v6: bool = False, **extra: Any) -> list[dict[str, Any]]:
    """lbN's peers: r1 over v4 (and over v6 when asked), with fast timers."""
    peers = [
        {
            "address": bl.r1_v4(n),
            "asn": bl.router.asn,
            "local_address": bl.lb_v4(n),
            "hold_time": 3,
            **extra,
        }
    ]
    if v6:
        peers.append(
            {
                "address": bl.r1_v6(n),
                "asn": bl.router.asn,
                "local_address": bl.lb_v6(n),
                "hold_time": 3,
                **extra,
            }
        )
    return peers


SpeakerFactory = Callable[..., Awaitable[tuple[ExaBGPSpeaker, Config]]]


@pytest.fixture
async def speaker_factory() -> AsyncIterator[SpeakerFactory]:
    """``await speaker_factory(bl, n, peers=None, v6=False, **speaker_kw)`` -> (started
    speaker, config); ``speaker_kw`` go to ``ExaBGPSpeaker``."""
    made: list[tuple[ExaBGPSpeaker, Path]] = []

    async def make(
        bl: BgpLab,
        n: int,
        peers: list[dict[str, Any]] | None = None,
        v6: bool = False,
        **speaker_kw: Any,
    ) -> tuple[ExaBGPSpeaker, Config]:
        rundir = tempdir("run")
        config = make_config(rundir, bl.lb_v4(n), bl.lb_as, peers or lb_peers(bl, n, v6=v6))
        speaker = ExaBGPSpeaker(netns=bl.lb_ns[n - 1], **speaker_kw)
        made.append((speaker, rundir))
        await speaker.start(config, lambda: None)
        return speaker, config

    yield make
    for speaker, rundir in made:
        try:
            await speaker.stop()
        finally:
            shutil.rmtree(rundir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _exabgp_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bgplb")
