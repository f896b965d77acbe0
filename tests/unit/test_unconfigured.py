"""Unconfigured mode: the API says why, is never ready, and exports bgplb_unconfigured 1."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from bgplb.cli import main
from bgplb.unconfigured import (
    MAX_REASON,
    Unconfigured,
    build_unconfigured_app,
    serve_unconfigured,
)

REASON = "config.yaml is invalid: peers: field required"


@pytest.fixture
async def client(aiohttp_client):  # type: ignore[no-untyped-def]
    return await aiohttp_client(build_unconfigured_app(Unconfigured.from_text(REASON)))


async def test_status_says_unconfigured_and_why(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/api/v1/status")
    assert resp.status == 200
    body = await resp.json()
    assert body["state"] == "unconfigured"
    assert body["reason"] == REASON


async def test_healthz_ok_readyz_503(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["reason"] == REASON


async def test_metrics_exports_unconfigured_gauge(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert "\nbgplb_unconfigured 1.0\n" in text
    assert "bgplb_bgp_session_up" not in text


async def test_mutating_endpoints_do_not_exist(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/api/v1/drain", "/api/v1/reload", "/api/v1/status"):
        assert (await client.post(path)).status in (404, 405)


def test_reason_is_one_bounded_line() -> None:
    u = Unconfigured.from_text("line one\n  line\ttwo\n" + "x" * (3 * MAX_REASON))
    assert u.reason.startswith("line one line two x")
    assert len(u.reason) == MAX_REASON
    assert Unconfigured.from_text("  \n").reason == "no reason given"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_binds_and_stops() -> None:
    port = _free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve_unconfigured(Unconfigured("no config disk"), "127.0.0.1", port, stop)
    )
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(f"http://127.0.0.1:{port}/api/v1/status") as r:
                    assert (await r.json())["reason"] == "no config disk"
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("unconfigured API never answered")
    stop.set()
    await asyncio.wait_for(task, 5)


def test_cli_rejects_a_bad_listen_address(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["unconfigured", "--reason", "x", "--listen", "not-an-ip"])
    assert exc.value.code == 2
